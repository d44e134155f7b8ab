'use strict';
// Stock Node child for the handle-passing benchmark: counts the sockets it receives, closes
// them, and reports its count after each one (with `each`) or when it has `want`.
let n = 0;
let want = Infinity;
let each = false;
process.on('message', (m, socket) => {
  if (m && m.want) {
    ({ want, each } = m);
  } else if (m === 's' && socket) {
    n++;
    socket.destroy();
    if (each && n !== want) process.send({ got: n });
  }
  if (n === want) process.send({ got: n });
});
process.on('disconnect', () => process.exit(0));
process.send('ready');
