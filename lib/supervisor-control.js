'use strict';
// The control socket of a running supervisor: a unix socket only its owner can use (0600), on
// which `rust-cluster status|reload|scale|stop <socket>` (lib/control-client.js) asks it.
//
// Plain `net` with JSON lines rather than rust-cluster/ipc: it then works without the native core
// (the supervisor runs on Node's own cluster too), the client loads nothing native, and
// `socat - UNIX-CONNECT:<socket>` can talk to it. One request per connection: a line
// `{"cmd":"status"|"reload"|"stop"}` or `{"cmd":"scale","workers":N}`, answered with one line,
// `{"ok":true,"result":...}` or `{"ok":false,"error":{"code","message"}}`, and the end.
const net = require('net');
const { listenOnPath } = require('./unix-listen');

const MAX_REQUEST = 64 * 1024;

function badRequest(message) {
  return Object.assign(new Error(message), { code: 'ERR_RUST_CLUSTER_BAD_REQUEST' });
}

const COMMANDS = {
  status: (supervisor) => supervisor.stats(),
  reload: (supervisor) => supervisor.reload(),
  scale: (supervisor, { workers }) => supervisor.scale(workers),
};

function parseRequest(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    throw badRequest('a request is one line of JSON');
  }
  const known = [...Object.keys(COMMANDS), 'stop'];
  if (!known.includes(request?.cmd)) throw badRequest(`unknown command ${JSON.stringify(request?.cmd)}: one of ${known.join(', ')}`);
  return request;
}

function controlServer(supervisor, path, onError) {
  const connections = new Set();
  const stopping = new Set(); // answers owed once the supervisor has stopped

  const server = net.createServer((socket) => {
    connections.add(socket);
    socket.on('close', () => connections.delete(socket));
    socket.on('error', () => {}); // a client that went away: nothing to answer
    const answer = (reply) => socket.end(`${JSON.stringify(reply)}\n`);
    const fail = (err) => answer({ ok: false, error: { code: err.code, message: err.message } });
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end < 0) {
        if (buffered.length > MAX_REQUEST) fail(badRequest(`a request is at most ${MAX_REQUEST} bytes`));
        return;
      }
      socket.removeAllListeners('data');
      let request;
      try {
        request = parseRequest(buffered.slice(0, end));
      } catch (err) {
        return fail(err);
      }
      if (request.cmd === 'stop') {
        stopping.add(answer);
        return supervisor.shutdown();
      }
      Promise.resolve()
        .then(() => COMMANDS[request.cmd](supervisor, request))
        .then((result) => answer({ ok: true, result }), fail);
    });
  });
  server.unref();
  server.on('error', onError);
  listenOnPath(server, path, 0o600, () => {}, onError);

  // Answered from 'stopped' itself, and the socket file removed, before whoever listens after us
  // (the command) exits the process.
  supervisor.on('stopped', (summary) => {
    for (const answer of stopping) answer({ ok: true, result: summary });
    server.close();
    for (const socket of connections) if (!socket.writableEnded) socket.destroy();
  });
  return server;
}

module.exports = { controlServer };
