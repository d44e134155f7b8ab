'use strict';
// Node's "Example: sending a server object" (child_process docs, subprocess.send()), using
// rust-cluster's fork. Adapted to be runnable: listens on an ephemeral port and prints it.
// Parent and child share the server, so which one answers a connection is up to the kernel
// (in practice mostly the parent); the example exits once the child has handled CONNECTIONS.
//   node examples/send-server.js [CONNECTIONS]    then repeatedly: nc 127.0.0.1 <port>
const { fork } = require('rust-cluster/child_process');
const net = require('node:net');
const path = require('node:path');

const CONNECTIONS = Number(process.argv[2]) || 2;
const subprocess = fork(path.join(__dirname, 'send-server-child.js'));

// Open up the server object and send the handle.
const server = net.createServer();
server.on('connection', (socket) => {
  socket.end('handled by parent');
});
server.listen(0, '127.0.0.1', () => {
  subprocess.send('server', server, () => {
    console.log(`listening on 127.0.0.1:${server.address().port}`);
  });
});

// The child reports each connection it handled.
let handledByChild = 0;
subprocess.on('message', (m) => {
  if (m === 'handled' && ++handledByChild === CONNECTIONS) {
    server.close();
    subprocess.disconnect(); // the child then closes its copy of the server and exits
  }
});
subprocess.on('exit', (code) => {
  process.exitCode = code;
  server.close(); // no-op after a normal finish; stops serving if the child died
});
