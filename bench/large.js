'use strict';
// Large messages: one {s: 'x'.repeat(size)} JSON message each way with a stock Node child.
// parent→child: from send() until the child's small reply; child→parent: the child builds the
// message first, then from the parent's 'go' until the message has arrived. One 1 MB warm-up
// each way first. 1/4/16/64 MB show whether time grows linearly (ms/MB column).
const path = require('path');
const c = require('./common');

const MB = 1024 * 1024;

function cases({ quick }) {
  const list = [];
  for (const dir of ['p2c', 'c2p']) {
    for (const mb of quick ? [1, 16, 64] : [1, 4, 16, 64]) {
      list.push({
        label: `${mb} MB ${dir === 'p2c' ? 'parent→child' : 'child→parent'}`,
        args: { dir, mb },
        metrics: [
          { key: 'ms', name: 'ms', better: 'lower', target: mb === 64 ? '≤1.0' : null },
          { key: 'msPerMB', name: 'ms/MB', better: 'lower' },
        ],
      });
    }
  }
  return list;
}

async function oneMessage(child, dir, size) {
  if (dir === 'p2c') {
    const msg = { s: 'x'.repeat(size) };
    const t0 = c.nowMs();
    const reply = c.once(child, 'message', (m) => m && m.got === size);
    child.send(msg);
    await reply;
    return c.nowMs() - t0;
  }
  const built = c.once(child, 'message', (m) => m === 'built');
  child.send({ cmd: 'bigsource', size });
  await built;
  const arrived = c.once(child, 'message', (m) => m && typeof m.s === 'string');
  const t0 = c.nowMs();
  child.send('go');
  const [m] = await arrived;
  const ms = c.nowMs() - t0;
  if (m.s.length !== size) throw new Error(`got ${m.s.length} chars, sent ${size}`);
  return ms;
}

async function measure({ dir, mb }) {
  const fork = c.loadFork();
  // Each child handles one mode: a fresh one for the warm-up and for the measurement.
  const start = async () => {
    const child = fork(path.join(__dirname, 'child.js'));
    await c.once(child, 'message', (m) => m === 'ready');
    if (dir === 'p2c') child.send({ cmd: 'bigsink' });
    return child;
  };
  let child = await start();
  await oneMessage(child, dir, MB);
  child.disconnect();
  child = await start();
  const ms = await oneMessage(child, dir, mb * MB);
  child.disconnect();
  return { ms, msPerMB: ms / mb };
}

module.exports = { name: 'large', title: 'Large messages', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
