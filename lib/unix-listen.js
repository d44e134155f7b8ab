'use strict';
// Listening on a unix socket path that only its owner can use: shared by rust-cluster/ipc and the
// supervisor's control socket.
const fs = require('fs');
const net = require('net');

function isSocketFile(path) {
  try {
    return fs.lstatSync(path).isSocket();
  } catch {
    return false;
  }
}

// `server` (a net.Server) listens on `path` with permissions no wider than `mode`. A socket file
// left by a dead server is replaced; a live server's is not: `onError` gets EADDRINUSE. Errors of
// the listen itself are the server's 'error', as usual.
function listenOnPath(server, path, mode, onListening, onError) {
  const listen = () => {
    // The socket file is created by bind() with the umask applied, so a umask set for the bind
    // alone makes it no wider than `mode` at any moment. (bind is synchronous in listen();
    // `exclusive` keeps it local even in a cluster worker.)
    const previous = process.umask(~mode & 0o777);
    try {
      server.listen({ path, exclusive: true }, onListening);
    } finally {
      process.umask(previous);
    }
  };
  if (!isSocketFile(path)) return listen();
  const probe = net.connect(path);
  probe.once('connect', () => {
    probe.destroy();
    const err = new Error(`listen EADDRINUSE: address already in use ${path}`);
    Object.assign(err, { code: 'EADDRINUSE', errno: -98, syscall: 'listen', address: path });
    onError(err);
  });
  probe.once('error', (err) => {
    if (err.code !== 'ECONNREFUSED') return onError(err);
    try {
      fs.unlinkSync(path);
    } catch (unlinkError) {
      if (unlinkError.code !== 'ENOENT') return onError(unlinkError);
    }
    listen();
  });
}

module.exports = { listenOnPath };
