'use strict';
// Requests lost to reloads: HTTP load on loopback (keep-alive, or Connection: close) through three
// consecutive reloads of 2 workers of bench/http-server.js, counting every request that failed or
// was reset (the load generator is the one the supervisor's load test uses). The rust-cluster
// column is the `rust-cluster` command reloaded with SIGHUP; the node column is, by case, Node's
// built-in cluster with the usual hand-written reload loop (bench/reload-node-primary.js) or PM2's
// cluster mode and `pm2 reload` (npm-installed into a temp dir on first use, never a dependency).
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { spawn, execFileSync } = require('child_process');
const c = require('./common');
const { startLoad } = require('../__test__/helpers/http-load');
const { freePort } = require('../__test__/helpers/supervisor');

const ROOT = path.join(__dirname, '..');
// The cluster benchmark's server, whose worker half is a plain HTTP server on PORT.
const APP = path.join(__dirname, 'http-server.js');
const PM2_DIR = path.join(os.tmpdir(), 'rust-cluster-bench-pm2');
const PM2 = path.join(PM2_DIR, 'node_modules', 'pm2', 'bin', 'pm2');
const WORKERS = 2;
const DRAIN_MS = 10_000;

function pm2Version() {
  try {
    return require(path.join(PM2_DIR, 'node_modules', 'pm2', 'package.json')).version;
  } catch {
    return null;
  }
}

// PM2's version, installing it into PM2_DIR when missing; null when it cannot be installed.
function ensurePm2(log = console.error) {
  if (pm2Version()) return pm2Version();
  log(`installing pm2 into ${PM2_DIR} for the reload benchmark`);
  try {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--no-save', '--prefix', PM2_DIR, 'pm2'], { stdio: 'ignore', timeout: 180_000 });
  } catch (err) {
    log(`pm2 could not be installed (${err.message.split('\n')[0]}): the PM2 cases are skipped`);
  }
  return pm2Version();
}

function cases({ quick }) {
  const sides = [{ node: 'cluster-loop', label: "node column: Node's cluster, hand-written reload loop" }];
  const pm2 = ensurePm2();
  if (pm2) sides.push({ node: 'pm2', label: `node column: PM2 ${pm2}, pm2 reload` });
  const list = [];
  for (const conn of ['keep-alive', 'close']) {
    for (const side of sides) {
      list.push({
        label: `${conn}, 3 reloads (${side.label})`,
        args: { conn, side: { rust: 'command', node: side.node }, reloads: 3, gapMs: quick ? 500 : 1000, connections: conn === 'close' ? 8 : 32 },
        rounds: quick ? 1 : 3,
        metrics: [
          { key: 'failed', name: 'failed requests', better: 'lower', target: 'abs≤0' },
          { key: 'ok', name: 'requests served', better: 'higher', info: true },
          { key: 'reqPerSec', name: 'req/s through the reloads', better: 'higher', info: true },
          { key: 'reloadMs', name: 'ms per reload', better: 'lower', info: true },
        ],
      });
    }
  }
  return list;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Resolves with the next line of `stream` matching `pattern`; rejects on a line matching `failure`
// or when `child` exits first.
function nextLine(child, stream, pattern, failure = /$^/) {
  return new Promise((resolve, reject) => {
    const lines = readline.createInterface({ input: stream });
    const done = (fn, value) => {
      lines.close();
      child.off('exit', onExit);
      fn(value);
    };
    const onExit = (code, signal) => done(reject, new Error(`exited (${code ?? signal}) while waiting for ${pattern}`));
    lines.on('line', (line) => {
      if (failure.test(line)) done(reject, new Error(line));
      else if (pattern.test(line)) done(resolve, line);
    });
    child.on('exit', onExit);
  });
}

function exited(child) {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve));
}

// Each side: start(port) -> { reload(), stop() }, 2 workers of APP serving on `port`.
const SIDES = {
  async command(port) {
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'rust-cluster.js'), '-w', String(WORKERS), '--drain-timeout', String(DRAIN_MS), APP], {
      env: { ...process.env, PORT: String(port) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await nextLine(child, child.stderr, /all \d+ workers ready/);
    return {
      async reload() {
        const done = nextLine(child, child.stderr, /reload complete/, /reload aborted/);
        child.kill('SIGHUP');
        await done;
      },
      async stop() {
        child.kill('SIGTERM');
        await exited(child);
      },
    };
  },

  async 'cluster-loop'(port) {
    const child = spawn(process.execPath, [path.join(__dirname, 'reload-node-primary.js')], {
      env: { ...process.env, PORT: String(port), WORKERS: String(WORKERS), DRAIN_MS: String(DRAIN_MS) },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await nextLine(child, child.stdout, /^READY$/);
    return {
      async reload() {
        const done = nextLine(child, child.stdout, /^RELOADED$/);
        child.kill('SIGHUP');
        await done;
      },
      async stop() {
        child.kill('SIGTERM');
        await exited(child);
      },
    };
  },

  async pm2(port) {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-bench-pm2-home-'));
    const env = { ...process.env, PM2_HOME: home, PORT: String(port) };
    const pm2 = (...args) => execFileSync(process.execPath, [PM2, ...args], { env, stdio: 'ignore', timeout: 60_000 });
    const stop = () => {
      try {
        pm2('kill');
      } finally {
        fs.rmSync(home, { recursive: true, force: true });
      }
    };
    try {
      pm2('start', APP, '-i', String(WORKERS), '--name', 'rc-bench', '--kill-timeout', String(DRAIN_MS));
      await waitServing(port, WORKERS);
    } catch (err) {
      stop();
      throw err;
    }
    return {
      async reload() {
        pm2('reload', 'rc-bench');
      },
      async stop() {
        stop();
      },
    };
  },
};

// Polls until `workers` distinct workers have answered on `port`.
async function waitServing(port, workers) {
  const deadline = Date.now() + 30_000;
  const seen = new Set();
  while (seen.size < workers) {
    if (Date.now() > deadline) throw new Error(`only ${seen.size} of ${workers} workers answered on port ${port}`);
    const load = startLoad({ port, mode: 'close', connections: 1 });
    await sleep(100);
    for (const worker of Object.keys((await load.stop()).workers)) seen.add(worker);
  }
}

async function measure({ conn, side, reloads, gapMs, connections }) {
  const which = side[c.impl()];
  const port = await freePort();
  const server = await SIDES[which](port);
  try {
    const load = startLoad({ port, mode: conn, connections });
    const t0 = c.nowMs();
    await sleep(gapMs);
    const reloadMs = [];
    for (let i = 0; i < reloads; i++) {
      const r0 = c.nowMs();
      await server.reload();
      reloadMs.push(c.nowMs() - r0);
      await sleep(gapMs);
    }
    const stats = await load.stop();
    const seconds = (c.nowMs() - t0) / 1000;
    return {
      side: which,
      failed: stats.failed,
      ok: stats.ok,
      reqPerSec: stats.ok / seconds,
      reloadMs: c.median(reloadMs),
      workersSeen: Object.keys(stats.workers).length,
      errors: stats.errors,
    };
  } finally {
    await server.stop();
  }
}

module.exports = { name: 'reload', title: 'Requests lost to 3 rolling reloads (2 workers, HTTP load)', cases, measure, script: __filename };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
