'use strict';
// Channel throughput, parent→child and child→parent, JSON and advanced at ~40 B, 1 KB and 64 KB,
// with a stock Node child; and child→parent
// with a child that loads the implementation under test (the stretch: rust-cluster at both
// ends, whose child batches its sends, against Node at both ends). Backpressure is
// the same for both implementations: the receiver acks every K messages and the sender keeps at
// most 2·K unacknowledged. Timed from the ack (or message) that ends the warm-up to the one that
// ends the measured N messages; the parent's CPU (process.cpuUsage, all threads) over the same span.
const path = require('path');
const c = require('./common');

// At least this many messages before timing, so that the JIT's one-time compiling (hundreds of
// milliseconds of CPU on V8's threads) is not counted per message of a short run.
const MIN_WARM = 400;

const KINDS = {
  small: { n: 60000, quickN: 8000, ack: 500 },
  '1k': { n: 30000, quickN: 4000, ack: 200 },
  '64k': { n: 3000, quickN: 400, ack: 4 },
};

function cases({ quick }) {
  const list = [];
  for (const dir of ['p2c', 'c2p']) {
    const variants = [
      ['small', 'json'],
      ['1k', 'json'],
      ['64k', 'json'],
      ['small', 'advanced'],
      ['1k', 'advanced'],
      ['64k', 'advanced'],
    ];
    for (const [kind, serialization] of variants) {
      const k = KINDS[kind];
      const n = quick ? k.quickN : k.n;
      const label = `${dir === 'p2c' ? 'parent→child' : 'child→parent'} ${kind}${serialization === 'advanced' ? ' advanced' : ' json'}`;
      // The targets: never slower nor costlier than Node; 1.5× the rate from the parent
      // and half the CPU for small messages.
      const fast = dir === 'p2c' && kind !== '64k';
      const target = { 'msgs/s': fast ? '≥1.5' : '≥1.0', 'cpu µs/msg': kind === 'small' ? '≤0.5' : '≤1.0' };
      list.push(channelCase(label, { dir, kind, serialization, n, ack: k.ack, warm: Math.max(10 * k.ack, MIN_WARM) }, target));
    }
  }
  for (const kind of ['small', '1k']) {
    const k = KINDS[kind];
    const n = 4 * (quick ? k.quickN : k.n);
    const args = { dir: 'c2p', kind, serialization: 'json', n, ack: 4 * k.ack, warm: 40 * k.ack, childLoads: true };
    list.push(channelCase(`child→parent ${kind} json, child loads rust-cluster`, args, { 'msgs/s': kind === 'small' ? '≥10' : null, 'cpu µs/msg': null }));
  }
  return list;
}

function channelCase(label, args, target) {
  return {
    label,
    args,
    metrics: [
      { key: 'msgsPerSec', name: 'msgs/s', better: 'higher', target: target['msgs/s'] },
      { key: 'cpuUsPerMsg', name: 'cpu µs/msg', better: 'lower', target: target['cpu µs/msg'] },
    ],
  };
}

async function measure({ dir, kind, serialization, n, ack, warm, childLoads = false }) {
  const fork = c.loadFork();
  const env = { ...process.env, BENCH_CHILD_LOADS: childLoads ? c.impl() : '' };
  const child = fork(path.join(__dirname, 'child.js'), [], { serialization, env });
  await c.once(child, 'message', (m) => m === 'ready');
  const total = warm + n;
  let t0, cpu0, t1, cpu1;
  await new Promise((resolve, reject) => {
    child.once('exit', (code, sig) => reject(new Error(`child exited ${code ?? sig}`)));
    if (dir === 'p2c') {
      let sent = 0;
      let acked = 0;
      const pump = () => {
        while (sent < total && sent - acked < 2 * ack) child.send(c.payload(kind, sent++));
      };
      child.on('message', (m) => {
        acked = m.ack;
        if (acked === warm) {
          t0 = c.nowMs();
          cpu0 = c.cpuMicros();
        }
        if (m.done) {
          t1 = c.nowMs();
          cpu1 = c.cpuMicros();
          return resolve();
        }
        pump();
      });
      child.send({ cmd: 'sink', ack, total });
      pump();
    } else {
      let got = 0;
      child.on('message', (m) => {
        if (m.i !== got) return reject(new Error(`out of order: got ${m.i}, expected ${got}`));
        got++;
        if (got === warm) {
          t0 = c.nowMs();
          cpu0 = c.cpuMicros();
        }
        if (got === total) {
          t1 = c.nowMs();
          cpu1 = c.cpuMicros();
          return resolve();
        }
        if (got % ack === 0) child.send({ ack: got });
      });
      child.send({ cmd: 'source', ack, total, kind });
    }
  });
  child.removeAllListeners('exit');
  child.disconnect();
  return { msgsPerSec: (n / (t1 - t0)) * 1000, cpuUsPerMsg: (cpu1 - cpu0) / n };
}

module.exports = { name: 'channel', title: 'IPC channel throughput', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
