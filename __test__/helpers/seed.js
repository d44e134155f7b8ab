'use strict';
// Running the seed's examples and reading what they print: examples/cluster.js (master/worker
// HTTP server) and examples/parent.js + child.js (the fork pair).
const assert = require('assert');
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const readline = require('readline');
const { until } = require('./wait');
const { isGone } = require('./proc');
const { freePort, portFree } = require('./ports');

const EXAMPLES = path.join(__dirname, '..', '..', 'examples');
const numCPUs = os.cpus().length;
const WORKER_STARTED = /^\[worker\] worker\d+ started, pid:(\d+)$/;

// Runs a cluster seed; its output (master and workers share stdout) is read line by line. At the
// end the master gets SIGKILL and its workers must exit by themselves (channel EOF): a SIGTERM
// would make the seed's 'exit' handler fork replacements.
function runSeed(t, file, { execArgv = [], cwd, env } = {}) {
  const child = spawn(process.execPath, [...execArgv, file], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const seed = { pid: child.pid, lines: [], stderr: '', closed: false };
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

// examples/cluster.js with its require line replaced by `requireLine` and its port by `port`,
// written to `dir`.
function writeSeed(dir, { requireLine, port }) {
  const source = fs.readFileSync(path.join(EXAMPLES, 'cluster.js'), 'utf8');
  assert.ok(source.includes("require('rust-cluster')") && source.includes('.listen(5000)'));
  const file = path.join(dir, 'cluster.js');
  fs.writeFileSync(file, source.replace("require('rust-cluster')", requireLine).replace('.listen(5000)', `.listen(${port})`));
  return file;
}

// The pid in the seed's answer, 'worker received request, id:N,pid:P'.
function seedPid(body) {
  const match = body.match(/^worker received request, id:\d+,pid:(\d+)$/);
  if (!match) throw new Error(`unexpected body: ${body}`);
  return Number(match[1]);
}

// GET / → the answering worker's pid, as `parse` reads it from the body (the seed's by default).
function requestPid(port, { timeout = 5_000, parse = seedPid } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        clearTimeout(timer);
        try {
          resolve(parse(body));
        } catch (err) {
          reject(err);
        }
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

// After 3 s the master messages every worker, and each answers.
async function waitForMessages(seed) {
  for (let id = 1; id <= numCPUs; id++) {
    await seed.waitLine(new RegExp(`^\\[worker\\] worker${id} received msg:\\[master\\] send msg \\d+ to worker${id}$`));
    await seed.waitLine(`[master] received msg:[worker] send msg ${id} to master.from worker${id}`);
  }
}

// Runs `node parent.js` in `cwd` (a directory holding the seed's parent.js and child.js) until
// parent and child have exchanged hello/hi twice; returns the lines printed.
async function helloHi(t, cwd, { env } = {}) {
  // Its own process group, so the example's child (which the parent never stops) dies with it.
  const parent = spawn(process.execPath, ['parent.js'], { cwd, env, stdio: ['ignore', 'pipe', 'inherit'], detached: true });
  t.after(() => {
    try {
      process.kill(-parent.pid, 'SIGKILL');
    } catch {}
  });
  const lines = [];
  readline.createInterface({ input: parent.stdout }).on('line', (line) => lines.push(line));
  let exit;
  parent.on('exit', (code, signal) => { exit = { code, signal }; });

  // The child sends every 3 s; two full rounds take about 6 s.
  await until(() => lines.length >= 4 || exit, { timeout: 25_000, what: 'two hello/hi rounds' });
  assert.equal(exit, undefined, 'the parent exited early');
  return lines.slice(0, 4);
}

const HELLO_HI = ['message from child: hello', 'message from parent: hi', 'message from child: hello', 'message from parent: hi'];

module.exports = {
  EXAMPLES,
  numCPUs,
  runSeed,
  writeSeed,
  requestPid,
  requestUntil,
  portFree,
  freePort,
  waitForWorkers,
  waitForMessages,
  helloHi,
  HELLO_HI,
};
