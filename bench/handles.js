'use strict';
// Handle passing: the parent accepts N connected TCP sockets from a local server (made before
// timing), then sends each with child.send('s', socket), keeping 1 or 32 sent and not yet
// reported received by the stock Node child; timed until it has all N. Parent CPU over the span.
const net = require('net');
const path = require('path');
const c = require('./common');

function cases({ quick }) {
  // 1 in flight: each send waits for the child's word that it has the socket; 32: a window.
  return [1, 32].map((window) => ({
    label: `TCP sockets parent→child, ${window} in flight`,
    args: { n: quick ? 300 : 1500, warm: quick ? 50 : 200, window },
    metrics: [
      { key: 'socketsPerSec', name: 'sockets/s', better: 'higher', target: '≥1.5' },
      { key: 'cpuUsPerSocket', name: 'cpu µs/socket', better: 'lower' },
    ],
  }));
}

// `count` server-side sockets of fresh loopback connections (the client ends are returned too).
async function connectedSockets(server, count) {
  const accepted = [];
  const clients = [];
  const all = new Promise((resolve) => {
    server.on('connection', function onConn(s) {
      accepted.push(s);
      if (accepted.length === count) {
        server.removeListener('connection', onConn);
        resolve();
      }
    });
  });
  // In batches, so the accept queue never overflows (dropped handshakes stall for seconds).
  for (let i = 0; i < count; i++) {
    const s = net.connect(server.address().port, '127.0.0.1');
    s.on('error', () => {});
    clients.push(s);
    if (clients.length % 100 === 0) while (accepted.length < clients.length) await new Promise((r) => setImmediate(r));
  }
  await all;
  return { accepted, clients };
}

// The child's count runs on across rounds: wait until it has `already` + these, with at most
// `window` sockets sent and not yet reported received.
async function sendAll(child, sockets, window, already = 0) {
  const want = already + sockets.length;
  let sent = 0;
  await new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (!m || typeof m.got !== 'number') return;
      if (m.got === want) {
        child.removeListener('message', onMessage);
        return resolve();
      }
      while (sent < sockets.length && sent - (m.got - already) < window) child.send('s', sockets[sent++]);
    };
    child.on('message', onMessage);
    child.once('exit', () => reject(new Error('child exited')));
    child.send({ want, each: true });
    while (sent < Math.min(window, sockets.length)) child.send('s', sockets[sent++]);
  });
}

async function measure({ n, warm, window = 32 }) {
  const fork = c.loadFork();
  const child = fork(path.join(__dirname, 'handles-child.js'));
  const server = net.createServer().listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
  await Promise.all([c.once(server, 'listening'), c.once(child, 'message', (m) => m === 'ready')]);

  // Warm-up round (not timed), then the measured one.
  const w = await connectedSockets(server, warm);
  await sendAll(child, w.accepted, window);
  w.clients.forEach((s) => s.destroy());

  const { accepted, clients } = await connectedSockets(server, n);
  const cpu0 = c.cpuMicros();
  const t0 = c.nowMs();
  await sendAll(child, accepted, window, warm);
  const ms = c.nowMs() - t0;
  const cpu = c.cpuMicros() - cpu0;
  clients.forEach((s) => s.destroy());
  server.close();
  child.disconnect();
  return { socketsPerSec: (n / ms) * 1000, cpuUsPerSocket: cpu / n };
}

module.exports = { name: 'handles', title: 'Handle passing', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
