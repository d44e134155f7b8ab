'use strict';
// Node's built-in cluster with the reload loop users write by hand (fork a replacement, wait for
// its 'listening', disconnect the old worker, kill it if it is still there after DRAIN_MS), run on
// SIGHUP. WORKERS workers of bench/http-server.js; prints READY once they listen and RELOADED after
// each reload; SIGTERM disconnects them and exits.
const cluster = require('cluster');
const path = require('path');
const { once } = require('events');

const workers = Number(process.env.WORKERS || 2);
const drainMs = Number(process.env.DRAIN_MS || 10_000);
cluster.setupPrimary({ exec: path.join(__dirname, 'http-server.js') });

async function start() {
  const worker = cluster.fork();
  await once(worker, 'listening');
  return worker;
}

async function reload() {
  for (const old of Object.values(cluster.workers)) {
    await start();
    old.disconnect();
    const timer = setTimeout(() => old.process.kill('SIGKILL'), drainMs);
    old.once('exit', () => clearTimeout(timer));
  }
}

let reloading = Promise.resolve();
process.on('SIGHUP', () => {
  reloading = reloading.then(reload).then(() => process.stdout.write('RELOADED\n'));
});
process.on('SIGTERM', () => cluster.disconnect(() => process.exit(0)));

Promise.all(Array.from({ length: workers }, start)).then(() => process.stdout.write('READY\n'));
