'use strict';
// rust-cluster/supervisor, run in this process (the test is the primary): respawn and backoff,
// the crash-loop stop, rolling reloads and their readiness gating, aborted reloads, the drain
// timeout, the memory limit, scaling, the probe endpoint, option checks.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const cluster = require('..');
const { supervise } = require('../supervisor');
const { once, until } = require('./helpers/wait');
const { isGone } = require('./helpers/proc');
const { FIXTURES, freePort, get } = require('./helpers/supervisor');

const SERVER = path.join(FIXTURES, 'server.js');
const CRASH = path.join(FIXTURES, 'crash.js');
const EVENTS = ['spawn', 'workerReady', 'ready', 'drain', 'exit', 'respawn', 'crashLoop', 'reloading', 'reloaded', 'reloadFailed', 'memoryLimit', 'stopping', 'stopped'];

function tmpFile(t, content) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-supervisor-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'file');
  fs.writeFileSync(file, content);
  return file;
}

// Starts a supervisor on a free port; `log` records every event in order as { event, at, pid,
// ...info }. It is destroyed after the test.
async function start(t, options) {
  const port = await freePort();
  const supervisor = supervise({ exec: SERVER, workers: 2, ...options, env: { PORT: String(port), ...options.env } });
  const log = [];
  for (const event of EVENTS) {
    supervisor.on(event, (...args) => {
      const entry = { event, at: Date.now() };
      for (const arg of args) {
        if (arg instanceof cluster.Worker) Object.assign(entry, { pid: arg.process.pid, id: arg.id });
        else if (arg instanceof Error) entry.error = arg;
        else if (arg && typeof arg === 'object') Object.assign(entry, arg);
        else if (event === 'exit') entry[entry.code === undefined ? 'code' : 'signal'] = arg;
      }
      log.push(entry);
    });
  }
  t.after(() => supervisor.destroy());
  const waitFor = (event, match = {}, count = 1) =>
    until(() => {
      const found = log.filter((e) => e.event === event && Object.entries(match).every(([k, v]) => e[k] === v));
      return found.length >= count && found;
    }, { what: `${count} × '${event}' ${JSON.stringify(match)}`, timeout: 20_000 });
  return { supervisor, log, port, waitFor };
}

const pidsOf = (supervisor) => supervisor.status().workers.map((w) => w.pid);

test('a dead worker is restarted after a backoff that doubles up to max and resets once one stayed up', async (t) => {
  // Starts 0-3 and 5-6 die as soon as they listen, start 4 stays up 700 ms (over reset: 500).
  const { log, waitFor } = await start(t, {
    exec: CRASH,
    workers: 1,
    backoff: { min: 100, max: 400, reset: 500 },
    maxRestarts: 100,
    env: { COUNT_FILE: tmpFile(t, ''), PLAN: '0,0,0,0,700,0,0' },
  });
  const respawns = await waitFor('respawn', {}, 6);
  assert.deepEqual(respawns.slice(0, 6).map((r) => r.delay), [100, 200, 400, 400, 100, 200]);
  // Each wait, from the exit to the next start, is the delay (timers are ms-granular) plus
  // at most a loaded machine's lag.
  await waitFor('spawn', { reason: 'respawn' }, 6);
  const spawns = log.filter((e) => e.event === 'spawn' && e.reason === 'respawn');
  respawns.slice(0, 6).forEach((r, i) => {
    const waited = spawns[i].at - r.at;
    assert.ok(waited >= r.delay - 2 && waited <= r.delay + 1000, `respawn ${i}: waited ${waited} ms for a ${r.delay} ms backoff`);
  });
});

test('more exits than maxRestarts within the window stops respawning and says so', async (t) => {
  const { supervisor, log, waitFor } = await start(t, {
    exec: CRASH,
    workers: 1,
    backoff: { min: 10, max: 20 },
    maxRestarts: 2,
    restartWindow: 60_000,
    env: { COUNT_FILE: tmpFile(t, ''), PLAN: '0' },
  });
  const [loop] = await waitFor('crashLoop');
  assert.deepEqual({ exits: loop.exits, window: loop.window }, { exits: 3, window: 60_000 });
  // Nothing is waiting to restart: the slot is empty for good.
  assert.equal(supervisor.crashLoop, true);
  assert.deepEqual(supervisor.status().workers.map((w) => w.state), ['stopped']);
  assert.equal(log.filter((e) => e.event === 'spawn').length, 3);
  assert.equal(log.filter((e) => e.event === 'respawn').length, 2);
});

test("one worker's crash restarts that worker only", async (t) => {
  const { supervisor, log, waitFor } = await start(t, { workers: 3 });
  await waitFor('ready');
  const before = pidsOf(supervisor);
  process.kill(before[1], 'SIGKILL');
  await waitFor('workerReady', { slot: 1 }, 2);
  const after = pidsOf(supervisor);
  assert.equal(after[0], before[0]);
  assert.equal(after[2], before[2]);
  assert.notEqual(after[1], before[1]);
  assert.ok(!isGone(before[0]) && !isGone(before[2]));
  assert.deepEqual(log.filter((e) => e.event === 'exit').map((e) => [e.pid, e.signal, e.expected]), [[before[1], 'SIGKILL', false]]);
  assert.equal(log.filter((e) => e.event === 'drain').length, 0);
  assert.deepEqual(log.filter((e) => e.event === 'respawn').map((e) => e.slot), [1]);
  assert.equal(supervisor.status().workers[1].restarts, 1);
});

test('a reload replaces one worker at a time, draining each old one only once its replacement is ready', async (t) => {
  const { supervisor, log, waitFor } = await start(t, { ready: 'message', env: { READY: 'message', READY_DELAY: '150' } });
  await waitFor('ready');
  const old = pidsOf(supervisor);
  const from = log.length;
  assert.deepEqual(await supervisor.reload(), { replaced: 2 });
  const fresh = pidsOf(supervisor);
  const steps = log.slice(from).filter((e) => ['spawn', 'workerReady', 'drain'].includes(e.event)).map((e) => `${e.event} ${e.pid}`);
  assert.deepEqual(steps, [
    `spawn ${fresh[0]}`,
    `workerReady ${fresh[0]}`,
    `drain ${old[0]}`,
    `spawn ${fresh[1]}`,
    `workerReady ${fresh[1]}`,
    `drain ${old[1]}`,
  ]);
  // Readiness came from the message, READY_DELAY after the replacement started.
  const started = log.find((e) => e.event === 'spawn' && e.pid === fresh[0]).at;
  assert.ok(log.find((e) => e.event === 'drain' && e.pid === old[0]).at - started >= 150);
  for (const pid of old) {
    const [exit] = await waitFor('exit', { pid });
    assert.deepEqual([exit.expected, exit.killed], [true, false]);
  }
});

test('reloadBatch starts that many replacements at once', async (t) => {
  const { supervisor, log, waitFor } = await start(t, { workers: 2, reloadBatch: 2 });
  await waitFor('ready');
  const old = pidsOf(supervisor);
  const from = log.length;
  await supervisor.reload();
  const fresh = pidsOf(supervisor);
  const steps = log.slice(from).filter((e) => ['spawn', 'workerReady', 'drain'].includes(e.event));
  assert.deepEqual(steps.slice(0, 2).map((e) => e.event), ['spawn', 'spawn']);
  const at = (event, pid) => steps.findIndex((e) => e.event === event && e.pid === pid);
  for (const slot of [0, 1]) assert.ok(at('workerReady', fresh[slot]) < at('drain', old[slot]), `slot ${slot} drained before its replacement was ready`);
});

test('a reload asked during a reload runs after it, and requests waiting share one', async (t) => {
  const { supervisor, log, waitFor } = await start(t, {});
  await waitFor('ready');
  const first = supervisor.reload();
  const second = supervisor.reload();
  const third = supervisor.reload();
  assert.notEqual(first, second);
  assert.equal(second, third);
  await Promise.all([first, second]);
  assert.deepEqual(log.filter((e) => e.event.startsWith('reload')).map((e) => e.event), ['reloading', 'reloaded', 'reloading', 'reloaded']);
  assert.deepEqual(supervisor.status().workers.map((w) => w.generation), [2, 2]);
});

test('a replacement that never becomes ready aborts the reload; the old workers keep serving', async (t) => {
  const version = tmpFile(t, '1');
  const { supervisor, log, port, waitFor } = await start(t, { ready: 'message', readyTimeout: 500, env: { READY: 'message', VERSION_FILE: version } });
  await waitFor('ready');
  const old = pidsOf(supervisor);
  fs.writeFileSync(version, 'stuck');
  const err = await supervisor.reload().then(() => assert.fail('the reload succeeded'), (e) => e);
  assert.equal(err.code, 'ERR_RUST_CLUSTER_RELOAD_FAILED');
  assert.equal(err.cause.code, 'ERR_RUST_CLUSTER_READY_TIMEOUT');
  assert.equal(err.replaced, 0);
  assert.deepEqual(pidsOf(supervisor), old);
  assert.equal(log.filter((e) => e.event === 'reloadFailed').length, 1);
  // The stuck replacement is drained, not left running.
  const stuck = log.find((e) => e.event === 'spawn' && e.reason === 'reload').pid;
  assert.deepEqual((await waitFor('drain', { pid: stuck }))[0].reason, 'readyTimeout');
  await waitFor('exit', { pid: stuck });
  assert.equal((await get(port)).headers['x-version'], '1');
});

test('a replacement that crashes aborts the reload without counting as a crash', async (t) => {
  const version = tmpFile(t, '1');
  const { supervisor, waitFor } = await start(t, { maxRestarts: 0, env: { VERSION_FILE: version } });
  await waitFor('ready');
  const old = pidsOf(supervisor);
  fs.writeFileSync(version, 'crash');
  const err = await supervisor.reload().then(() => assert.fail('the reload succeeded'), (e) => e);
  assert.equal(err.code, 'ERR_RUST_CLUSTER_RELOAD_FAILED');
  assert.equal(err.cause.code, 'ERR_RUST_CLUSTER_WORKER_EXIT');
  assert.deepEqual(pidsOf(supervisor), old);
  assert.equal(supervisor.crashLoop, false);
});

test('a worker still busy at the drain timeout is killed then', async (t) => {
  const { supervisor, log, port, waitFor } = await start(t, { workers: 1, drainTimeout: 400 });
  await waitFor('ready');
  const arrived = once(cluster, 'message');
  const hanging = get(port, '/slow?ms=60000').catch((err) => err);
  await arrived;
  const stopped = supervisor.shutdown();
  const [drain] = await waitFor('drain');
  const [exit] = await waitFor('exit');
  assert.equal(exit.killed, true);
  assert.equal(exit.signal, 'SIGKILL');
  const waited = exit.at - drain.at;
  assert.ok(waited >= 400 && waited < 2000, `killed ${waited} ms after the drain began`);
  assert.deepEqual(await stopped, { killed: 1 });
  assert.equal((await hanging).code, 'ECONNRESET');
  assert.equal(log.at(-1).event, 'stopped');
});

test('a request in flight when the drain begins finishes, and the worker then leaves by itself', async (t) => {
  const { supervisor, port, waitFor } = await start(t, { workers: 1, drainTimeout: 10_000 });
  await waitFor('ready');
  const arrived = once(cluster, 'message');
  const slow = get(port, '/slow?ms=300');
  await arrived;
  const stopped = supervisor.shutdown();
  const response = await slow;
  assert.equal(response.status, 200);
  const [exit] = await waitFor('exit');
  assert.deepEqual([exit.expected, exit.killed, exit.code], [true, false, 0]);
  assert.deepEqual(await stopped, { killed: 0 });
});

test('a worker whose RSS stays over maxMemory is replaced through the graceful path', async (t) => {
  const { supervisor, port, waitFor } = await start(t, { workers: 1, maxMemory: 100 });
  await waitFor('ready');
  const [old] = pidsOf(supervisor);
  const grown = Date.now();
  await get(port, '/grow?mb=150');
  const [limit] = await waitFor('memoryLimit');
  assert.equal(limit.pid, old);
  assert.ok(limit.rss > 100 * 2 ** 20);
  // Two samples 500 ms apart, plus a loaded machine's lag.
  assert.ok(limit.at - grown < 3000, `noticed after ${limit.at - grown} ms`);
  const [spawn] = await waitFor('spawn', { reason: 'memory' });
  await waitFor('workerReady', { pid: spawn.pid });
  assert.equal((await waitFor('drain', { pid: old }))[0].reason, 'memory');
  await waitFor('exit', { pid: old });
  assert.deepEqual(pidsOf(supervisor), [spawn.pid]);
  assert.equal((await get(port)).headers['x-worker'], String(spawn.pid));
});

test('scale() adds workers and drains the extra ones', async (t) => {
  const { supervisor, waitFor } = await start(t, { workers: 1 });
  await waitFor('ready');
  assert.deepEqual(await supervisor.scale(3), { workers: 3 });
  assert.deepEqual(supervisor.status().workers.map((w) => w.state), ['ready', 'ready', 'ready']);
  const extra = pidsOf(supervisor).slice(1);
  await supervisor.scale(1);
  assert.equal(supervisor.status().workers.length, 1);
  for (const pid of extra) assert.equal((await waitFor('drain', { pid }))[0].reason, 'scale');
  await assert.rejects(() => supervisor.scale(0), { code: 'ERR_OUT_OF_RANGE' });
});

test('workers are cluster workers: in cluster.workers, with the usual events', async (t) => {
  const forked = [];
  const listening = [];
  const onFork = (w) => forked.push(w.process.pid);
  const onListening = (w) => listening.push(w.process.pid);
  cluster.on('fork', onFork);
  cluster.on('listening', onListening);
  t.after(() => {
    cluster.off('fork', onFork);
    cluster.off('listening', onListening);
  });
  const { supervisor, waitFor } = await start(t, {});
  await waitFor('ready');
  const pids = pidsOf(supervisor);
  assert.deepEqual(Object.values(cluster.workers).map((w) => w.process.pid).filter((pid) => pids.includes(pid)).sort(), [...pids].sort());
  assert.deepEqual(forked.sort(), [...pids].sort());
  assert.deepEqual(listening.sort(), [...pids].sort());
});

test('the probe endpoint answers /ready and /live for health checks', async (t) => {
  const probePort = await freePort();
  const { supervisor, port, waitFor } = await start(t, { workers: 1, probe: { host: '127.0.0.1', port: probePort } });
  await waitFor('ready');
  const ready = await get(probePort, '/ready');
  assert.equal(ready.status, 200);
  assert.equal(JSON.parse(ready.body).workers[0].state, 'ready');
  assert.equal((await get(probePort, '/live')).status, 200);
  assert.equal((await get(probePort, '/elsewhere')).status, 404);
  // While it drains, it is no longer ready.
  const arrived = once(cluster, 'message');
  const slow = get(port, '/slow?ms=500');
  await arrived;
  supervisor.shutdown();
  assert.equal((await get(probePort, '/ready')).status, 503);
  assert.equal((await get(probePort, '/live')).status, 200);
  assert.equal((await slow).status, 200);
});

test('options are checked with Node-shaped errors', () => {
  assert.throws(() => supervise({}), { code: 'ERR_MISSING_ARGS' });
  assert.throws(() => supervise({ exec: SERVER, workers: 0 }), { code: 'ERR_OUT_OF_RANGE', message: /options\.workers/ });
  assert.throws(() => supervise({ exec: SERVER, workers: 'many' }), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => supervise({ exec: SERVER, ready: 'online' }), { code: 'ERR_INVALID_ARG_VALUE', message: /'listening', 'message'/ });
  assert.throws(() => supervise({ exec: SERVER, backoff: { min: 100, max: 50 } }), { code: 'ERR_OUT_OF_RANGE', message: /options\.backoff\.max/ });
  assert.throws(() => supervise({ exec: SERVER, drainTimeout: '5s' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => supervise({ exec: SERVER, probe: { port: 70000 } }), { code: 'ERR_SOCKET_BAD_PORT' });
  // The policy is cluster's, frozen once cluster has been set up.
  cluster.setupPrimary();
  assert.throws(() => supervise({ exec: SERVER, policy: 'none' }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.policy/ });
});
