'use strict';
// The project's origin document: examples/cluster.js (the seed's master/worker demo, requiring
// rust-cluster) must behave as it does on Node's cluster: fork one worker per CPU, log their
// events, exchange messages after 3 s, serve HTTP from every worker and re-fork a worker that dies.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { until } = require('./helpers/wait');
const { reference } = require('./helpers/impl');
const { isGone } = require('./helpers/proc');

const ROOT = path.join(__dirname, '..');
const EXAMPLE = path.join(ROOT, 'examples', 'cluster.js');
// In reference mode require('rust-cluster') is redirected to Node's cluster by a preload.
const PRELOAD = reference ? ['-r', path.join(__dirname, 'fixtures', 'cluster', 'reference-alias.js')] : [];
const numCPUs = os.cpus().length;
const WORKER_STARTED = /^\[worker\] worker\d+ started, pid:(\d+)$/;

// Runs a copy of the seed; its output (master and workers share stdout) is read line by line.
// At the end the master gets SIGKILL and its workers must exit by themselves (channel EOF): a
// SIGTERM would make the seed's 'exit' handler fork replacements.
function runSeed(t, file) {
  const child = spawn(process.execPath, [...PRELOAD, file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const seed = { lines: [], stderr: '', closed: false };
  readline.createInterface({ input: child.stdout }).on('line', (line) => seed.lines.push(line));
  child.stderr.setEncoding('utf8').on('data', (chunk) => { seed.stderr += chunk; });
  child.stdout.on('close', () => { seed.closed = true; });

  // The first line matching `pattern` (a string to equal, or a RegExp) as its match array.
  seed.waitLine = (pattern, { timeout = 10_000 } = {}) => until(() => {
    for (const line of seed.lines) {
      const match = typeof pattern === 'string' ? line === pattern && [line] : line.match(pattern);
      if (match) return match;
    }
    if (seed.closed) throw new Error(`the seed ended without printing ${pattern}\nstderr: ${seed.stderr}`);
    return null;
  }, { timeout, what: `${pattern}\nstderr so far: ${seed.stderr}` });
  seed.workerPids = () => seed.lines.map((l) => l.match(WORKER_STARTED)).filter(Boolean).map((m) => Number(m[1]));

  t.after(async () => {
    child.kill('SIGKILL');
    const pids = seed.workerPids();
    try {
      await until(() => pids.every(isGone), { what: `workers ${pids} to exit after their master` });
    } finally {
      for (const pid of pids) if (!isGone(pid)) process.kill(pid, 'SIGKILL');
      child.stdout.destroy();
      child.stderr.destroy();
    }
  });
  return seed;
}


// GET / → the answering worker's pid, parsed from 'worker received request, id:N,pid:P'.
function requestPid(port, { timeout = 5_000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        clearTimeout(timer);
        const match = body.match(/^worker received request, id:\d+,pid:(\d+)$/);
        if (match) resolve(Number(match[1]));
        else reject(new Error(`unexpected body: ${body}`));
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeout} ms`)), timeout);
    req.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

// Requests (at most 200) until `enough(pids seen)` holds; returns the pids seen.
async function requestUntil(port, enough) {
  const pids = new Set();
  for (let i = 0; i < 200 && !enough(pids); i++) pids.add(await requestPid(port));
  return pids;
}

function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer().once('error', () => resolve(false));
    server.listen(port, () => server.close(() => resolve(true)));
  });
}

async function freePort() {
  const server = net.createServer().listen(0);
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// Waits for the master's fork/online/listening lines of workers 1..numCPUs; returns their pids.
async function waitForWorkers(seed, port) {
  await seed.waitLine(/^\[master\] master started, pid:\d+$/);
  const pids = [];
  for (let id = 1; id <= numCPUs; id++) {
    await seed.waitLine(`[master] fork: worker${id}`);
    await seed.waitLine(`[master] online: worker${id}`);
    const [, pid, address, listenPort] = await seed.waitLine(new RegExp(`^\\[master\\] listening: worker${id},pid:(\\d+), address:(.*):(\\d+)$`));
    assert.equal(address, 'null', 'listen(port) with no host reports a null address');
    assert.equal(Number(listenPort), port);
    await seed.waitLine(`[worker] worker${id} started, pid:${pid}`);
    pids.push(Number(pid));
  }
  return pids;
}

test('seed on a free port: lifecycle logs, messages after 3 s, HTTP from every worker, a dead worker is replaced', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-seed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'cluster.js');
  const implementation = reference ? "require('cluster')" : `require(${JSON.stringify(ROOT)})`;
  const source = fs.readFileSync(EXAMPLE, 'utf8');
  assert.ok(source.includes("require('rust-cluster')") && source.includes('.listen(5000)'));
  fs.writeFileSync(file, source.replace("require('rust-cluster')", implementation).replace('.listen(5000)', `.listen(${port})`));

  const seed = runSeed(t, file);
  const pids = await waitForWorkers(seed, port);

  const answered = await requestUntil(port, (seen) => seen.size >= Math.min(2, numCPUs));
  for (const pid of answered) assert.ok(pids.includes(pid), `pid ${pid} is one of the workers`);

  // After 3 s the master messages every worker, and each answers.
  for (let id = 1; id <= numCPUs; id++) {
    await seed.waitLine(new RegExp(`^\\[worker\\] worker${id} received msg:\\[master\\] send msg \\d+ to worker${id}$`));
    await seed.waitLine(`[master] received msg:[worker] send msg ${id} to master.from worker${id}`);
  }

  // A killed worker is logged and replaced by worker numCPUs + 1 on the same port.
  process.kill(pids[0], 'SIGKILL');
  await seed.waitLine('[master] exit worker1 died, try to fork a new worker.');
  const replacement = numCPUs + 1;
  await seed.waitLine(`[master] fork: worker${replacement}`);
  const [, newPid] = await seed.waitLine(new RegExp(`^\\[master\\] listening: worker${replacement},pid:(\\d+), address:null:${port}$`));
  assert.ok((await requestUntil(port, (seen) => seen.has(Number(newPid)))).has(Number(newPid)), 'the replacement serves requests');
});

test('literal examples/cluster.js on port 5000: workers listen and serve HTTP', { timeout: 20_000 }, async (t) => {
  if (!(await portFree(5000))) return t.skip('port 5000 is in use on this machine');
  const seed = runSeed(t, EXAMPLE);
  const pids = await waitForWorkers(seed, 5000);
  const answered = await requestUntil(5000, (seen) => seen.size >= Math.min(2, numCPUs));
  for (const pid of answered) assert.ok(pids.includes(pid), `pid ${pid} is one of the workers`);
});
