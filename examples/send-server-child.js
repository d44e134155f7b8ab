'use strict';
// Child of send-server.js (the docs' subprocess.js): handles connections on the server it
// receives from the parent.
process.on('message', (m, server) => {
  if (m === 'server') {
    server.on('connection', (socket) => {
      socket.end('handled by child');
      process.send('handled');
    });
    process.on('disconnect', () => server.close());
  }
});
