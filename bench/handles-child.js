'use strict';
// Stock Node child for the handle-passing benchmark: counts the sockets it receives, closes
// them, and reports when it has `n`.
let n = 0;
let want = Infinity;
process.on('message', (m, socket) => {
  if (m && m.want) {
    want = m.want;
  } else if (m === 's' && socket) {
    n++;
    socket.destroy();
  }
  if (n === want) process.send({ got: n });
});
process.on('disconnect', () => process.exit(0));
process.send('ready');
