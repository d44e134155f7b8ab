'use strict';
// Start-up: cluster.fork() of W workers until every one is 'online' (this file is also the
// worker), and plain fork() until the child's first message (the stock child's 'ready').
const path = require('path');
const c = require('./common');

const nodeCluster = require('cluster');
if (nodeCluster.isWorker) {
  // Idle worker: stays until the primary disconnects it.
  process.on('disconnect', () => process.exit(0));
  return;
}

function cases() {
  const metric = (name) => [{ key: 'ms', name, better: 'lower', target: '≤1.0' }];
  return [
    ...[1, 2, 8].map((workers) => ({ label: `cluster.fork ×${workers} → online`, args: { mode: 'cluster', workers }, metrics: metric('ms') })),
    { label: 'fork → first message', args: { mode: 'fork' }, metrics: metric('ms') },
  ];
}

async function measure({ mode, workers }) {
  if (mode === 'fork') {
    const fork = c.loadFork();
    const t0 = c.nowMs();
    const child = fork(path.join(__dirname, 'child.js'));
    await c.once(child, 'message', (m) => m === 'ready');
    const ms = c.nowMs() - t0;
    child.disconnect();
    return { ms };
  }
  const cluster = c.loadCluster();
  cluster.setupPrimary({ exec: __filename, args: [] });
  const t0 = c.nowMs();
  let online = 0;
  await new Promise((resolve, reject) => {
    cluster.on('exit', (w, code, sig) => reject(new Error(`worker exited ${code ?? sig} before online`)));
    cluster.on('online', () => ++online === workers && resolve());
    for (let i = 0; i < workers; i++) cluster.fork();
  });
  const ms = c.nowMs() - t0;
  cluster.removeAllListeners('exit');
  cluster.disconnect();
  return { ms };
}

module.exports = { name: 'fork', title: 'Start-up', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
