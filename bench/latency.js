'use strict';
// Round-trip latency: ping-pong of small messages with a stock Node echo child (JSON or advanced)
// or a cluster worker, one in flight at a time; p50/p99 of the per-round-trip time, after a warm-up.
const path = require('path');
const c = require('./common');

function cases({ quick }) {
  const args = { n: quick ? 2000 : 10000, warm: quick ? 300 : 1000 };
  const variants = [
    ['fork json', { mode: 'fork', serialization: 'json' }],
    ['fork advanced', { mode: 'fork', serialization: 'advanced' }],
    ['cluster json', { mode: 'cluster', serialization: 'json' }],
  ];
  return variants.map(([label, how]) => ({
    label: `ping-pong small, ${label}`,
    args: { ...args, ...how },
    metrics: [
      { key: 'p50', name: 'p50 µs', better: 'lower', target: '≤1.0' },
      { key: 'p99', name: 'p99 µs', better: 'lower', target: '≤1.0' },
      { key: 'cpuUsPerRt', name: 'cpu µs/rt', better: 'lower' },
    ],
  }));
}

// The echoing peer: a forked child, or a cluster worker running the same script.
async function startPeer(mode, serialization) {
  const script = path.join(__dirname, 'child.js');
  if (mode === 'fork') {
    const child = c.loadFork()(script, [], { serialization });
    await c.once(child, 'message', (m) => m === 'ready');
    return { peer: child, stop: () => child.disconnect() };
  }
  const cluster = c.loadCluster();
  cluster.setupPrimary({ exec: script, serialization });
  const worker = cluster.fork();
  await c.once(worker, 'message', (m) => m === 'ready');
  return { peer: worker, stop: () => worker.disconnect() };
}

async function measure({ n, warm, mode = 'fork', serialization = 'json' }) {
  const { peer: child, stop } = await startPeer(mode, serialization);
  child.send({ cmd: 'echo' });
  const samples = new Float64Array(n);
  let cpu0;
  await new Promise((resolve, reject) => {
    child.once('exit', (code, sig) => reject(new Error(`child exited ${code ?? sig}`)));
    let i = 0;
    let t = 0n;
    const ping = () => {
      t = process.hrtime.bigint();
      child.send(c.payload('small', i));
    };
    child.on('message', (m) => {
      const dt = Number(process.hrtime.bigint() - t) / 1e3;
      if (m.i !== i) return reject(new Error(`echo mismatch: ${m.i} vs ${i}`));
      if (i >= warm) samples[i - warm] = dt;
      i++;
      if (i === warm) cpu0 = c.cpuMicros();
      if (i === warm + n) return resolve();
      ping();
    });
    ping();
  });
  const cpu = c.cpuMicros() - cpu0;
  child.removeAllListeners('exit');
  stop();
  const sorted = Array.from(samples).sort((a, b) => a - b);
  return { p50: c.percentile(sorted, 50), p99: c.percentile(sorted, 99), cpuUsPerRt: cpu / n };
}

module.exports = { name: 'latency', title: 'Round-trip latency', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
