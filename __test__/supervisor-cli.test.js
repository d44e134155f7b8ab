'use strict';
// The `rust-cluster` command: usage and bad values, exit statuses, signals (reload, graceful
// shutdown, a second SIGINT, a terminal's Ctrl-C to the whole group), systemd notification, the
// seed's example, and the load test: HTTP through three reloads without one failed request.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, spawnSync, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { until } = require('./helpers/wait');
const { isGone } = require('./helpers/proc');
const { startLoad } = require('./helpers/http-load');
const { ROOT, BIN, FIXTURES, freePort, get, startCommand } = require('./helpers/supervisor');

const SERVER = path.join(FIXTURES, 'server.js');
const CRASH = path.join(FIXTURES, 'crash.js');

function run(args) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });
}

function tmpDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-cli-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function has(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`]).status === 0;
}

// Starts the command on the server fixture and waits until its workers are ready. The fixture
// logs each /slow request it gets, so a test can wait until one is in flight.
async function startServing(t, args, env = {}) {
  const port = await freePort();
  const command = startCommand(t, [...args, SERVER], { env: { PORT: String(port), SLOW_LOG: '1', ...env } });
  await command.waitLine(/all \d+ workers ready/);
  return { command, port };
}

test('--help lists every option; --version prints the version', () => {
  const help = run(['--help']);
  assert.equal(help.status, 0);
  for (const flag of ['--workers', '--policy', '--ready', '--ready-timeout', '--drain-timeout', '--reload-batch', '--backoff', '--max-restarts', '--restart-window', '--max-memory', '--probe', '--metrics', '--control']) {
    assert.match(help.stdout, new RegExp(`^ +(-\\w, )?${flag} `, 'm'), flag);
  }
  const version = run(['-v']);
  assert.equal(version.stdout, `${require('../package.json').version}\n`);
});

test('bad usage is a clear message on stderr and exit status 2', () => {
  const cases = [
    [[], /no app given/],
    [['--workers', 'lots', SERVER], /--workers takes a whole number or 'max', not 'lots'/],
    [['--workers', '0', SERVER], /"--workers" is out of range. It must be an integer >= 1. Received 0/],
    [['--policy', 'random', SERVER], /'--policy' must be one of: 'rr', 'none', 'reuseport'. Received 'random'/],
    [['--ready=online', SERVER], /'--ready' must be one of: 'listening', 'message'/],
    [['--drain-timeout', '-5', SERVER], /--drain-timeout takes a whole number of milliseconds, not '-5'/],
    [['--backoff', '100', SERVER], /--backoff takes min,max or min,max,reset in milliseconds, not '100'/],
    [['--backoff', '500,100', SERVER], /"--backoff.max" is out of range. It must be an integer >= 500/],
    [['--max-memory', '1.5', SERVER], /--max-memory takes a whole number of megabytes/],
    [['--probe', 'localhost:', SERVER], /--probe takes \[host:\]port/],
    [['--metrics', 'all', SERVER], /--metrics takes \[host:\]port, not 'all'/],
    [['--metrics', '70000', SERVER], /--metrics.port should be >= 0 and < 65536/],
    [['--control'], /option '--control' needs a value/],
    [['status'], /usage: rust-cluster status <socket> \[--json\]/],
    [['scale', '/tmp/x.sock'], /usage: rust-cluster scale <socket> <n\|max> \[--json\]/],
    [['reload', '/tmp/x.sock', '--now'], /unknown option '--now' for reload/],
    [['--frobnicate', SERVER], /unknown option '--frobnicate'/],
    [['--workers'], /option '--workers' needs a value/],
    [['missing-app.js'], /cannot find the app 'missing-app.js'/],
  ];
  for (const [args, message] of cases) {
    const { status, stderr } = run(args);
    assert.equal(status, 2, `${args.join(' ')}: ${stderr}`);
    assert.match(stderr, message);
    assert.match(stderr, /Try 'rust-cluster --help'/);
  }
});

test("the app's own arguments and options follow its path untouched", async (t) => {
  const dir = tmpDir(t);
  const app = path.join(dir, 'app.js');
  fs.writeFileSync(app, `require('fs').writeFileSync(process.env.OUT, JSON.stringify(process.argv.slice(2))); process.send('ready');`);
  const out = path.join(dir, 'argv.json');
  const command = startCommand(t, ['-w', '1', '--ready', 'message', app, '--workers', '9', '-h'], { env: { OUT: out } });
  await command.waitLine(/all 1 workers ready/);
  assert.deepEqual(JSON.parse(fs.readFileSync(out, 'utf8')), ['--workers', '9', '-h']);
});

test('a crash loop stops respawning, says so, and the command exits 1', async (t) => {
  const count = path.join(tmpDir(t), 'count');
  const port = await freePort();
  const command = startCommand(t, ['-w', '1', '--max-restarts', '2', '--backoff', '10,20', CRASH], { env: { PORT: String(port), COUNT_FILE: count, PLAN: '0' } });
  assert.deepEqual(await command.exited, { code: 1, signal: null });
  assert.ok(command.count(/crash loop: 3 unexpected exits within 60000 ms; workers are no longer restarted/) === 1, command.lines.join('\n'));
  assert.equal(command.count(/started in slot/), 3);
  assert.equal(fs.readFileSync(count, 'utf8').length, 3);
});

for (const policy of ['rr', 'reuseport', 'none']) {
  test(`HTTP load through three reloads (SIGHUP, --policy ${policy}): not one request fails, keep-alive or Connection: close`, { timeout: 60_000 }, async (t) => {
    const version = path.join(tmpDir(t), 'version');
    fs.writeFileSync(version, '1');
    const { command, port } = await startServing(t, ['-w', '2', '--policy', policy], { VERSION_FILE: version });
    const keepAlive = startLoad({ port, mode: 'keep-alive', connections: 16 });
    const close = startLoad({ port, mode: 'close', connections: 8 });
    const served = () => keepAlive.stats.ok + close.stats.ok;
    for (let reload = 2; reload <= 4; reload++) {
      // Requests are flowing before each reload, and the reload happens under them.
      const before = served();
      await until(() => served() > before + 50, { what: 'requests before the reload' });
      fs.writeFileSync(version, String(reload));
      const from = command.lines.length;
      command.child.kill('SIGHUP');
      await command.waitLine(/reload complete: 2 workers replaced/, { from });
      const after = served();
      await until(() => served() > after + 50, { what: 'requests after the reload' });
    }
    const results = [await keepAlive.stop(), await close.stop()];
    for (const stats of results) {
      assert.deepEqual({ mode: stats.mode, failed: stats.failed, errors: stats.errors }, { mode: stats.mode, failed: 0, errors: {} });
      // Every version served in turn: the new workers run the new code.
      assert.deepEqual(Object.keys(stats.versions).sort(), ['1', '2', '3', '4']);
      assert.ok(stats.ok > 200, `${stats.mode}: only ${stats.ok} requests`);
    }
    t.diagnostic(`${policy}: keep-alive: ${results[0].ok} ok, ${results[0].failed} failed; close: ${results[1].ok} ok, ${results[1].failed} failed`);
    assert.equal((await get(port)).headers['x-version'], '4');
    assert.equal(command.count(/died/), 0);
    command.child.kill('SIGTERM');
    assert.deepEqual(await command.exited, { code: 0, signal: null });
  });
}

test('SIGTERM drains: a request in flight finishes, every worker leaves, exit status 0', async (t) => {
  const { command, port } = await startServing(t, ['-w', '2']);
  const slow = get(port, '/slow?ms=400');
  await command.waitLine(/has a slow request/);
  command.child.kill('SIGTERM');
  assert.equal((await slow).status, 200);
  assert.deepEqual(await command.exited, { code: 0, signal: null });
  assert.equal(command.count(/stopped; every worker drained/), 1);
  for (const pid of command.pids()) assert.ok(isGone(pid));
});

test('a worker still busy at --drain-timeout is killed then, and the command exits 1', async (t) => {
  const { command, port } = await startServing(t, ['-w', '1', '--drain-timeout', '300']);
  get(port, '/slow?ms=60000').catch(() => {});
  await command.waitLine(/has a slow request/);
  const stopping = Date.now();
  command.child.kill('SIGTERM');
  await command.waitLine(/killed at the drain timeout/);
  assert.ok(Date.now() - stopping >= 300);
  assert.deepEqual(await command.exited, { code: 1, signal: null });
  assert.equal(command.count(/stopped; 1 workers were killed at the drain timeout/), 1);
});

test('a second SIGINT stops at once', async (t) => {
  const { command, port } = await startServing(t, ['-w', '2', '--drain-timeout', '60000']);
  get(port, '/slow?ms=60000').catch(() => {});
  await command.waitLine(/has a slow request/);
  command.child.kill('SIGINT');
  await command.waitLine(/shutting down/);
  const second = Date.now();
  command.child.kill('SIGINT');
  assert.deepEqual(await command.exited, { code: 130, signal: null });
  assert.ok(Date.now() - second < 5000);
  await until(() => command.pids().every(isGone), { what: 'the workers gone' });
});

test("Ctrl-C in a terminal (SIGINT to the whole process group) drains instead of killing the workers", async (t) => {
  const port = await freePort();
  const command = startCommand(t, ['-w', '2', SERVER], { env: { PORT: String(port), SLOW_LOG: '1' }, detached: true });
  await command.waitLine(/all 2 workers ready/);
  const slow = get(port, '/slow?ms=400');
  await command.waitLine(/has a slow request/);
  process.kill(-command.child.pid, 'SIGINT');
  assert.equal((await slow).status, 200);
  assert.deepEqual(await command.exited, { code: 0, signal: null });
  assert.equal(command.count(/died/), 0);
});

test('under systemd (NOTIFY_SOCKET) it sends READY=1, RELOADING=1 then READY=1, and STOPPING=1', { skip: !has('python3') && 'needs python3' }, async (t) => {
  const socketPath = path.join(tmpDir(t), 'notify.sock');
  const receiver = spawn('python3', [path.join(FIXTURES, 'notify-socket.py'), socketPath], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => receiver.kill());
  const messages = [];
  let bound = false;
  readline.createInterface({ input: receiver.stdout }).on('line', (line) => {
    if (line === 'bound') bound = true;
    else messages.push(JSON.parse(line));
  });
  await until(() => bound, { what: 'the notify socket' });

  const { command } = await startServing(t, ['-w', '2'], { NOTIFY_SOCKET: socketPath });
  const pid = command.child.pid;
  await until(() => messages.length >= 1, { what: 'READY=1' });
  assert.deepEqual(messages[0].fields, { MAINPID: String(pid), READY: '1', STATUS: '2 workers ready' });
  // The datagram carries the supervisor's own credentials: NotifyAccess=main accepts it.
  assert.equal(messages[0].pid, pid);
  // The socket is the supervisor's: workers do not inherit it.
  for (const worker of command.pids()) assert.doesNotMatch(fs.readFileSync(`/proc/${worker}/environ`, 'utf8'), /NOTIFY_SOCKET/);

  const now = process.hrtime.bigint() / 1000n;
  command.child.kill('SIGHUP');
  await until(() => messages.length >= 3, { what: 'RELOADING=1 and READY=1' });
  assert.equal(messages[1].fields.RELOADING, '1');
  assert.ok(Math.abs(Number(BigInt(messages[1].fields.MONOTONIC_USEC) - now)) < 10_000_000, 'MONOTONIC_USEC is CLOCK_MONOTONIC');
  assert.deepEqual(messages[2].fields, { MAINPID: String(pid), READY: '1', STATUS: 'reloaded, 2 workers ready' });

  command.child.kill('SIGTERM');
  assert.deepEqual(await command.exited, { code: 0, signal: null });
  assert.deepEqual(messages.slice(3).map((m) => m.fields.STOPPING), ['1']);
});

test('--probe serves /ready for a Kubernetes probe', async (t) => {
  const probePort = await freePort();
  const { command } = await startServing(t, ['-w', '1', '--probe', `127.0.0.1:${probePort}`]);
  const ready = await get(probePort, '/ready');
  assert.equal(ready.status, 200);
  assert.equal(JSON.parse(ready.body).state, 'running');
  command.child.kill('SIGTERM');
  assert.deepEqual(await command.exited, { code: 0, signal: null });
});

test('--metrics serves Prometheus metrics at GET /metrics', async (t) => {
  const metricsPort = await freePort();
  const { command } = await startServing(t, ['-w', '1', '--metrics', String(metricsPort)]);
  const metrics = await get(metricsPort, '/metrics');
  assert.equal(metrics.status, 200);
  assert.match(metrics.body, /^rust_cluster_workers\{state="ready"\} 1$/m);
  command.child.kill('SIGTERM');
  assert.deepEqual(await command.exited, { code: 0, signal: null });
});

test('the seed\'s example, worker half only, served by `rust-cluster examples/server.js`', async (t) => {
  const port = await freePort();
  const command = startCommand(t, ['-w', '2', 'examples/server.js'], { env: { PORT: String(port) } });
  await command.waitLine(/all 2 workers ready/);
  const { status, body } = await get(port);
  assert.equal(status, 200);
  assert.match(body, /^worker received request, id:[12],pid:\d+$/);
  command.child.kill('SIGTERM');
  assert.deepEqual(await command.exited, { code: 0, signal: null });
  assert.match(command.stdout, /\[worker\] worker1 started, pid:\d+/);
});

test('npx runs the command from the package', () => {
  assert.equal(execFileSync('npx', ['--no-install', 'rust-cluster', '--version'], { cwd: ROOT, encoding: 'utf8' }), `${require('../package.json').version}\n`);
});
