'use strict';
// Asks a supervisor's control socket (lib/supervisor-control.js): one request per connection.
// What can go wrong on the way is said in terms of the cluster: nothing at that path, a socket
// left by a cluster that is gone, a socket that is not the caller's.
const fs = require('fs');
const net = require('net');

function controlError(code, message, props) {
  return Object.assign(new Error(message), { code }, props);
}

function isSocket(path) {
  try {
    return fs.statSync(path).isSocket();
  } catch {
    return false;
  }
}

function connectError(err, path) {
  const props = { syscall: err.syscall, path, cause: err };
  switch (err.code) {
    case 'ENOENT':
      return controlError('ENOENT', `no cluster at ${path}: there is no such socket (is rust-cluster running with --control ${path}?)`, props);
    case 'ECONNREFUSED':
      return isSocket(path)
        ? controlError('ECONNREFUSED', `${path} is a stale control socket: the cluster that made it is gone`, props)
        : controlError('ECONNREFUSED', `${path} is not a control socket`, props);
    case 'EACCES':
      return controlError('EACCES', `permission denied: the control socket ${path} is only for the user who started the cluster`, props);
    default:
      return controlError(err.code, `cannot reach the cluster at ${path}: ${err.message}`, props);
  }
}

// Sends `request` ({ cmd, ... }) to the control socket at `path`; resolves with the result.
function request(path, message) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let connected = false;
    let answer = '';
    let failed = null;
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(message)}\n`);
    });
    socket.on('data', (chunk) => (answer += chunk));
    socket.on('error', (err) => (failed = connected ? err : connectError(err, path)));
    socket.on('close', () => {
      if (failed && !answer) return reject(failed);
      let reply;
      try {
        reply = JSON.parse(answer);
      } catch {
        return reject(controlError('ERR_RUST_CLUSTER_NO_ANSWER', `the cluster at ${path} closed the connection without answering`));
      }
      if (reply.ok) resolve(reply.result);
      else reject(controlError(reply.error.code, reply.error.message));
    });
  });
}

module.exports = { request };
