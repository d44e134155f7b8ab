'use strict';
// The control socket (`rust-cluster --control <socket>`) and the commands that use it, run against
// a running command: status as a table and as JSON, reload under load, scale, stop; the socket's
// permissions, a user who is not its owner, and what can go wrong on the way.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { until } = require('./helpers/wait');
const { isGone } = require('./helpers/proc');
const { startLoad } = require('./helpers/http-load');
const { ROOT, BIN, FIXTURES, freePort, get, startCommand } = require('./helpers/supervisor');

const SERVER = path.join(FIXTURES, 'server.js');

function tmpDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-control-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// `rust-cluster ...args` to completion (`uid`/`gid` to run it as another user):
// { status, stdout, stderr }. Asynchronous, so that this process can serve load meanwhile.
function run(args, { uid, gid } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, uid, gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

// `rust-cluster -w <workers> --control <dir>/control.sock ...args server.js`, its workers ready.
async function startCluster(t, { args = [], env = {}, workers = 2 } = {}) {
  const socket = path.join(tmpDir(t), 'control.sock');
  const port = await freePort();
  const command = startCommand(t, ['-w', String(workers), '--control', socket, ...args, SERVER], { env: { PORT: String(port), ...env } });
  await command.waitLine(new RegExp(`all ${workers} workers ready`));
  return { command, socket, port };
}

async function status(socket) {
  const { status: code, stdout, stderr } = await run(['status', socket, '--json']);
  assert.equal(code, 0, stderr);
  return JSON.parse(stdout);
}

test('status prints a table of the workers, aligned, in human units; --json gives the figures', async (t) => {
  const { command, socket, port } = await startCluster(t);
  for (let i = 0; i < 6; i++) await get(port);
  const pids = command.pids();

  const { status: code, stdout } = await run(['status', socket]);
  assert.equal(code, 0);
  const lines = stdout.split('\n');
  assert.equal(lines[0], 'rust-cluster: running, 2/2 workers ready, 0 reloads');
  const table = lines.slice(2, lines.indexOf('', 2));
  assert.match(table[0], /^SLOT +ID +PID +STATE +UPTIME +RESTARTS +CPU +CPU TIME +MEMORY +MSGS IN +MSGS OUT +BYTES IN +BYTES OUT +CONNS +PENDING$/);
  assert.equal(table.length, 3);
  // Every column right-aligned but STATE: each cell ends where its title does.
  const ends = [...table[0].matchAll(/\S+(?: \S+)*/g)].map((m) => m.index + m[0].length);
  for (const row of table.slice(1)) {
    const cells = [...row.matchAll(/\S+(?: \S+)*/g)];
    assert.equal(cells.length, ends.length, row);
    cells.forEach((cell, i) => i !== 3 && assert.equal(cell.index + cell[0].length, ends[i], `${row}: column ${i}`));
    const [slot, , pid, state, uptime, restarts, cpu, cpuTime, memory] = cells.map((c) => c[0]);
    assert.equal(Number(pid), pids[Number(slot)]);
    assert.deepEqual([state, restarts], ['ready', '0']);
    assert.match(uptime, /^\d+s$|^\d+m \d+s$/);
    assert.match(cpu, /^\d+\.\d%$/);
    assert.match(cpuTime, /^\d+\.\d\ds$/);
    assert.match(memory, /^\d+\.\d MB$/);
  }
  assert.match(stdout, /^SERVER +ACCEPTED +QUEUED\n127\.0\.0\.1:\d+:\S+ +6 +0$/m);

  const json = await status(socket);
  assert.deepEqual(json.workers.map((w) => w.pid), pids);
  assert.equal(json.workers.reduce((sum, w) => sum + w.handed, 0), 6);
  assert.deepEqual(json.servers.map((s) => s.accepted), [6]);
  assert.equal(json.implementation, 'rust');
});

test('status shows the CPU % of the last second or so, though nobody asked before', { timeout: 30_000 }, async (t) => {
  const { command, socket, port } = await startCluster(t, { workers: 1 });
  const [pid] = command.pids();
  // CPU seconds from /proc, read here so that the supervisor samples nothing meanwhile.
  const cpu = () => {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  };
  // 3 s idle, then busy: over the worker's life, under half of a core by the time it has spun 1.5 s.
  await get(port, '/slow?ms=3000');
  const before = cpu();
  const spin = get(port, '/spin?ms=5000').catch((err) => err);
  await until(() => cpu() - before >= 1.5, { what: '1.5 s of CPU spent', interval: 50 });
  const [worker] = (await status(socket)).workers;
  assert.ok(worker.cpuPercent > 80, `${worker.cpuPercent}%`);
  await spin;
});

test('the socket is owner-only (0600) from the start; a user who is not its owner cannot connect (EACCES)', { skip: process.getuid() !== 0 && 'needs root to run a command as another user' }, async (t) => {
  const { socket } = await startCluster(t, { workers: 1 });
  const stat = fs.statSync(socket);
  assert.ok(stat.isSocket());
  assert.equal(stat.mode & 0o777, 0o600);
  // Only the socket's own permissions may stand in the way.
  fs.chmodSync(path.dirname(socket), 0o755);
  const nobody = { uid: 65534, gid: 65534 };
  const refused = await run(['status', socket], nobody);
  assert.equal(refused.status, 1, refused.stderr);
  assert.equal(refused.stderr, `rust-cluster: permission denied: the control socket ${socket} is only for the user who started the cluster\n`);
  // The same user gets through a socket opened to everyone: the refusal was the socket's mode.
  fs.chmodSync(socket, 0o666);
  t.after(() => fs.existsSync(socket) && fs.chmodSync(socket, 0o600));
  const allowed = await run(['status', socket, '--json'], nobody);
  assert.equal(allowed.status, 0, allowed.stderr);
  assert.equal(JSON.parse(allowed.stdout).workers.length, 1);
});

test('reload under load: not one request fails, and the new workers serve the new code', { timeout: 60_000 }, async (t) => {
  const version = path.join(tmpDir(t), 'version');
  fs.writeFileSync(version, '1');
  const { command, socket, port } = await startCluster(t, { env: { VERSION_FILE: version } });
  const old = command.pids();
  const keepAlive = startLoad({ port, mode: 'keep-alive', connections: 4 });
  const close = startLoad({ port, mode: 'close', connections: 4 });
  const served = () => keepAlive.stats.ok + close.stats.ok;
  await until(() => served() > 50, { what: 'requests before the reload' });
  fs.writeFileSync(version, '2');
  const reload = await run(['reload', socket]);
  assert.deepEqual([reload.status, reload.stdout], [0, 'reloaded: 2 workers replaced\n'], reload.stderr);
  const after = served();
  await until(() => served() > after + 50, { what: 'requests after the reload' });
  for (const stats of [await keepAlive.stop(), await close.stop()]) {
    assert.deepEqual({ mode: stats.mode, failed: stats.failed, errors: stats.errors }, { mode: stats.mode, failed: 0, errors: {} });
    assert.deepEqual(Object.keys(stats.versions).sort(), ['1', '2']);
  }
  const json = await status(socket);
  assert.equal(json.generation, 1);
  assert.ok(json.workers.filter((w) => w.state === 'ready').every((w) => !old.includes(w.pid)));
  assert.equal((await get(port)).headers['x-version'], '2');
});

test('scale adds and drains workers; a bad worker count is refused', async (t) => {
  const { socket } = await startCluster(t, { workers: 1 });
  assert.deepEqual(await run(['scale', socket, '3']), { status: 0, stdout: 'scaled to 3 workers\n', stderr: '' });
  assert.deepEqual((await status(socket)).workers.map((w) => [w.slot, w.state]), [[0, 'ready'], [1, 'ready'], [2, 'ready']]);
  assert.equal((await run(['scale', socket, '1'])).status, 0);
  const serving = (await status(socket)).workers.filter((w) => w.state !== 'draining');
  assert.deepEqual(serving.map((w) => w.slot), [0]);

  const notANumber = await run(['scale', socket, 'lots']);
  assert.deepEqual([notANumber.status, notANumber.stderr], [2, "rust-cluster: bad worker count 'lots': scale takes a whole number or 'max'\nTry 'rust-cluster --help'.\n"]);
  const zero = await run(['scale', socket, '0']);
  assert.deepEqual([zero.status, zero.stderr], [1, 'rust-cluster: The value of "workers" is out of range. It must be an integer >= 1. Received 0\n']);
  const json = await run(['scale', socket, '0', '--json']);
  assert.deepEqual(JSON.parse(json.stdout), { error: { code: 'ERR_OUT_OF_RANGE', message: 'The value of "workers" is out of range. It must be an integer >= 1. Received 0' } });
  assert.equal((await run(['scale', socket])).status, 2);
  assert.equal((await status(socket)).workers.filter((w) => w.state === 'ready').length, 1, 'nothing changed');
});

test('stop drains every worker and ends once the cluster has stopped; the socket file is gone', async (t) => {
  const { command, socket, port } = await startCluster(t, { env: { SLOW_LOG: '1' } });
  const slow = get(port, '/slow?ms=300');
  await command.waitLine(/has a slow request/);
  const stop = await run(['stop', socket]);
  assert.deepEqual([stop.status, stop.stdout], [0, 'stopped; every worker drained\n'], stop.stderr);
  assert.equal((await slow).status, 200, 'the request in flight was answered');
  assert.deepEqual(await command.exited, { code: 0, signal: null });
  assert.ok(command.pids().every(isGone));
  assert.equal(fs.existsSync(socket), false);
});

test('no cluster at the path, a stale socket, a file that is not a socket: clear errors, exit status 1', async (t) => {
  const dir = tmpDir(t);
  const missing = path.join(dir, 'missing.sock');
  assert.deepEqual(await run(['status', missing]), {
    status: 1,
    stdout: '',
    stderr: `rust-cluster: no cluster at ${missing}: there is no such socket (is rust-cluster running with --control ${missing}?)\n`,
  });
  const json = await run(['reload', missing, '--json']);
  assert.equal(JSON.parse(json.stdout).error.code, 'ENOENT');
  const file = path.join(dir, 'file');
  fs.writeFileSync(file, '');
  assert.deepEqual(await run(['stop', file]), { status: 1, stdout: '', stderr: `rust-cluster: ${file} is not a control socket\n` });

  // A second cluster cannot take a live cluster's socket; a stale one (its cluster SIGKILLed) is
  // said to be stale, and the next cluster replaces it.
  const { command, socket } = await startCluster(t, { workers: 1 });
  const second = startCommand(t, ['-w', '1', '--control', socket, SERVER], { env: { PORT: String(await freePort()) } });
  assert.deepEqual(await second.exited, { code: 1, signal: null });
  assert.ok(second.lines.includes(`rust-cluster: listen EADDRINUSE: address already in use ${socket}`), second.lines.join('\n'));
  assert.equal((await status(socket)).workers.length, 1, 'the first cluster still answers');
  command.child.kill('SIGKILL');
  await command.exited;
  assert.deepEqual(await run(['status', socket]), { status: 1, stdout: '', stderr: `rust-cluster: ${socket} is a stale control socket: the cluster that made it is gone\n` });
  const third = startCommand(t, ['-w', '1', '--control', socket, SERVER], { env: { PORT: String(await freePort()) } });
  await third.waitLine(/all 1 workers ready/);
  assert.deepEqual((await status(socket)).workers.map((w) => w.pid), third.pids());
});

test('a request that is not a line of JSON naming a command is refused with ERR_RUST_CLUSTER_BAD_REQUEST', async (t) => {
  const { socket } = await startCluster(t, { workers: 1 });
  const ask = (line) => new Promise((resolve, reject) => {
    let answer = '';
    net.connect(socket, function () {
      this.end(line);
    }).setEncoding('utf8').on('data', (chunk) => (answer += chunk)).on('close', () => resolve(JSON.parse(answer))).on('error', reject);
  });
  assert.deepEqual(await ask('status\n'), { ok: false, error: { code: 'ERR_RUST_CLUSTER_BAD_REQUEST', message: 'a request is one line of JSON' } });
  assert.deepEqual(await ask('{"cmd":"restart"}\n'), { ok: false, error: { code: 'ERR_RUST_CLUSTER_BAD_REQUEST', message: 'unknown command "restart": one of status, reload, scale, stop' } });
  assert.deepEqual((await ask('{"cmd":"status"}\n')).ok, true);
});
