'use strict';
// Cluster HTTP with 2 workers under wrk (keep-alive and `Connection: close`), per scheduling
// policy: req/s, p99, the primary's CPU per request (the primary reports its own cpuUsage before
// and after the wrk run) and how requests spread over the workers (X-Worker response header,
// counted by wrk-count.lua). rust-cluster's SCHED_REUSEPORT is compared with Node's SCHED_NONE.
const net = require('net');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const c = require('./common');

const POLICIES = [
  { name: 'rr', rust: 'rr', node: 'rr' },
  { name: 'none', rust: 'none', node: 'none' },
  { name: 'reuseport (node: none)', rust: 'reuseport', node: 'none' },
];

function cases({ quick }) {
  const list = [];
  for (const conn of ['keep-alive', 'close']) {
    for (const p of POLICIES) {
      const reqTarget = conn === 'close' ? (p.name === 'rr' ? '≥1.8' : p.rust === 'reuseport' ? '≥1.0' : null) : '≥1.0';
      list.push({
        label: `${conn} ${p.name}`,
        args: { conn, policy: { rust: p.rust, node: p.node }, seconds: quick ? 1 : 2, connections: 32 },
        rounds: quick ? 1 : 3, // each round is several seconds
        metrics: [
          { key: 'reqPerSec', name: 'req/s', better: 'higher', target: reqTarget },
          { key: 'p99', name: 'p99 ms', better: 'lower' },
          { key: 'cpuUsPerReq', name: 'primary cpu µs/req', better: 'lower', target: conn === 'close' && p.name === 'rr' ? '≤0.25' : null },
          { key: 'maxShare', name: 'busiest worker %', better: 'lower', info: true, target: p.rust === 'reuseport' ? 'abs≤60' : null },
          { key: 'errors', name: 'wrk errors', better: 'lower', info: true },
        ],
      });
    }
  }
  return list;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function lines(stream, onLine) {
  let buf = '';
  stream.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
}

function toMs(v, unit) {
  return Number(v) * { us: 1e-3, ms: 1, s: 1e3, m: 6e4 }[unit];
}

function parseWrk(out) {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(out);
  const errs = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const workers = /^WORKERS (\{.*\})$/m.exec(out);
  if (!rps || !p99) throw new Error(`cannot parse wrk output:\n${out}`);
  return {
    reqPerSec: Number(rps[1]),
    p99: toMs(p99[1], p99[2]),
    errors: (errs ? errs.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + (non2xx ? Number(non2xx[1]) : 0),
    errorDetail: (errs ? errs[0] : '') + (non2xx ? ` ${non2xx[0]}` : ''),
    perWorker: workers ? JSON.parse(workers[1]) : {},
  };
}

function parseAutocannon(out) {
  const j = JSON.parse(out.slice(out.indexOf('{')));
  const errors = (j.errors || 0) + (j.timeouts || 0) + (j.non2xx || 0);
  return { reqPerSec: j.requests.average, p99: j.latency.p99, errors, errorDetail: `autocannon errors ${errors}`, perWorker: {} };
}

async function measure({ conn, policy, seconds, connections }) {
  const impl = c.impl();
  const port = await freePort();
  const primary = spawn(process.execPath, [path.join(__dirname, 'http-server.js')], {
    env: { ...process.env, IMPL: impl, PORT: String(port), WORKERS: '2', NODE_CLUSTER_SCHED_POLICY: policy[impl] },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const waiting = [];
  let ready;
  const isReady = new Promise((resolve, reject) => {
    ready = resolve;
    primary.on('exit', (code, sig) => reject(new Error(`primary exited ${code ?? sig}`)));
  });
  isReady.catch(() => {});
  lines(primary.stdout, (line) => {
    if (line.startsWith('READY')) ready(line.slice(6));
    if (line.startsWith('CPU ')) waiting.shift()(Number(line.slice(4)));
  });
  const cpu = () => {
    primary.stdin.write('cpu\n');
    return new Promise((resolve) => waiting.push(resolve));
  };
  const schedulingPolicy = await isReady;
  const wrkArgs = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', '-s', path.join(__dirname, 'wrk-count.lua')];
  if (conn === 'close') wrkArgs.push('-H', 'Connection: close');
  wrkArgs.push(`http://127.0.0.1:${port}/`);

  // Fallback only when wrk could not be installed (no per-worker spread then).
  const gen = hasWrk()
    ? ['wrk', wrkArgs, parseWrk]
    : ['npx', ['--yes', 'autocannon', '-j', `-c${connections}`, `-d${seconds}`, ...(conn === 'close' ? ['-H', 'Connection=close'] : []), `http://127.0.0.1:${port}/`], parseAutocannon];

  const cpu0 = await cpu();
  const out = await new Promise((resolve, reject) => {
    const lg = spawn(gen[0], gen[1], { stdio: ['ignore', 'pipe', 'inherit'] });
    let s = '';
    lg.stdout.on('data', (d) => (s += d));
    lg.on('error', reject);
    lg.on('exit', (code) => (code === 0 ? resolve(s) : reject(new Error(`${gen[0]} exited ${code}: ${s}`))));
  });
  const cpu1 = await cpu();
  primary.stdin.write('stop\n');
  await c.once(primary, 'exit').catch(() => {});

  const r = gen[2](out);
  const total = Object.values(r.perWorker).reduce((a, b) => a + b, 0);
  const shares = Object.values(r.perWorker).map((n) => (100 * n) / total).sort((a, b) => b - a);
  const requests = r.reqPerSec * seconds;
  return {
    reqPerSec: r.reqPerSec,
    p99: r.p99,
    cpuUsPerReq: (cpu1 - cpu0) / requests,
    maxShare: shares[0] ?? null,
    spread: shares.map((s) => s.toFixed(0)).join('/'),
    errors: r.errors,
    errorDetail: r.errorDetail,
    schedulingPolicy: Number(schedulingPolicy),
  };
}

function hasWrk() {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
    return true;
  } catch (err) {
    return err.status === 1; // `wrk --version` prints usage and exits 1
  }
}

// wrk from Debian's packages, installed if missing; `npx --yes autocannon` only when apt cannot.
// Resolves to the load generator's name, or null.
function ensureWrk(log = console.log) {
  const has = hasWrk;
  if (has()) return 'wrk';
  log('wrk not found: installing it with apt-get');
  const apt = (args) => {
    try {
      execFileSync('apt-get', args, { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
      return true;
    } catch {
      return false;
    }
  };
  if (!apt(['install', '-y', 'wrk'])) apt(['update']) && apt(['install', '-y', 'wrk']);
  if (has()) return 'wrk';
  log('apt-get could not install wrk: falling back to `npx --yes autocannon` (no per-worker spread)');
  try {
    execFileSync('npx', ['--yes', 'autocannon', '--version'], { stdio: 'ignore' });
    return 'autocannon';
  } catch {
    return null;
  }
}

module.exports = { name: 'http', title: 'Cluster HTTP (2 workers, wrk)', cases, measure, script: __filename, ensureWrk };

if (require.main === module) measure(c.measureArgs()).then(c.report, (err) => {
  console.error(err);
  process.exit(1);
});
