'use strict';
// Node's "Example: sending a socket object" (child_process docs, subprocess.send()), using
// rust-cluster's fork. Adapted to be runnable: listens on an ephemeral port and prints it,
// treats connections from 127.0.0.2 as "special" (instead of 74.125.127.100) and exits after
// CONNECTIONS connections.
//   node examples/send-socket.js [CONNECTIONS]
//   then: nc 127.0.0.1 <port>   /   nc -s 127.0.0.2 127.0.0.1 <port>
const { fork } = require('rust-cluster/child_process');
const { createServer } = require('node:net');
const path = require('node:path');

const CONNECTIONS = Number(process.argv[2]) || 4;
const SPECIAL = '127.0.0.2';
const child = path.join(__dirname, 'send-socket-child.js');
const normal = fork(child, ['normal']);
const special = fork(child, ['special']);

// Open up the server and send sockets to child. Use pauseOnConnect to prevent
// the sockets from being read before they are sent to the child process.
let count = 0;
const server = createServer({ pauseOnConnect: true });
server.on('connection', (socket) => {

  // If this is special priority...
  if (socket.remoteAddress === SPECIAL) {
    special.send('socket', socket);
  } else {
    // This is normal priority.
    normal.send('socket', socket);
  }

  if (++count === CONNECTIONS) {
    server.close();
    // Pending sends complete before the channels close; then the children exit.
    normal.disconnect();
    special.disconnect();
  }
});
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});

for (const subprocess of [normal, special]) {
  subprocess.on('exit', (code) => {
    if (code !== 0) process.exitCode = code;
  });
}
