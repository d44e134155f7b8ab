'use strict';
// Handle passing: the parent accepts N connected TCP sockets from a local server (made before
// timing), then sends each with child.send('s', socket); timed until the stock Node child reports
// it has received all N. Parent CPU over the same span.
const net = require('net');
const path = require('path');
const c = require('./common');

function cases({ quick }) {
  return [
    {
      label: 'TCP sockets parent→child',
      args: { n: quick ? 300 : 1500, warm: quick ? 50 : 200 },
      metrics: [
        { key: 'socketsPerSec', name: 'sockets/s', better: 'higher', target: '≥1.5' },
        { key: 'cpuUsPerSocket', name: 'cpu µs/socket', better: 'lower' },
      ],
    },
  ];
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

// The child's count runs on across rounds: wait until it has `already` + these.
async function sendAll(child, sockets, already = 0) {
  const want = already + sockets.length;
  const done = c.once(child, 'message', (m) => m && m.got === want);
  child.send({ want });
  for (const s of sockets) child.send('s', s);
  await done;
}

async function measure({ n, warm }) {
  const fork = c.loadFork();
  const child = fork(path.join(__dirname, 'handles-child.js'));
  const server = net.createServer().listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
  await Promise.all([c.once(server, 'listening'), c.once(child, 'message', (m) => m === 'ready')]);

  // Warm-up round (not timed), then the measured one.
  const w = await connectedSockets(server, warm);
  await sendAll(child, w.accepted);
  w.clients.forEach((s) => s.destroy());

  const { accepted, clients } = await connectedSockets(server, n);
  const cpu0 = c.cpuMicros();
  const t0 = c.nowMs();
  await sendAll(child, accepted, warm);
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
