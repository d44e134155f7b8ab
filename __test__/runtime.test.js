'use strict';
// The runtime around the channel: a parent whose JavaScript is busy while a child floods it, and
// the implementation used from several JavaScript environments (worker_threads) at once. Runs
// against rust-cluster by default and against Node's built-ins with RC_REFERENCE=node.
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Worker } = require('node:worker_threads');

const impl = require('./helpers/impl');
const { once, until } = require('./helpers/wait');
const { isGone, openFds } = require('./helpers/proc');
const { echoRound } = require('./fixtures/runtime/exchange');

// Loaded here, in the main thread, before any worker thread loads it.
const { fork } = impl.child_process;

const MB = 1 << 20;
const fixture = (name) => path.join(__dirname, 'fixtures', 'runtime', name);

function killPid(pid) {
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

// No /proc entry at all: exited and reaped (isGone() also accepts a zombie).
const reaped = (pid) => !fs.existsSync(`/proc/${pid}`);

// Runs fixtures/runtime/thread.js in a worker thread with `job` as its workerData. `next(type)`
// waits for the thread's first report of that type, failing at once if the thread reported a
// failure, threw or exited first. The thread and every child it reported are gone after the test.
function startThread(t, job) {
  const worker = new Worker(fixture('thread.js'), { workerData: job });
  const thread = { worker, reports: [], pids: [], error: null, exitCode: null };
  worker.on('message', (m) => {
    if (m.type === 'spawned') thread.pids.push(m.pid);
    thread.reports.push(m);
  });
  worker.on('error', (err) => {
    thread.error = err;
  });
  worker.on('exit', (code) => {
    thread.exitCode = code;
  });
  thread.next = (type, { timeout = 20_000 } = {}) => until(() => {
    const failed = thread.reports.find((r) => r.type === 'failed');
    if (failed) throw new Error(`the thread failed: ${failed.error}`);
    const found = thread.reports.find((r) => r.type === type);
    if (found) return found;
    if (thread.error) throw thread.error;
    if (thread.exitCode !== null) throw new Error(`the thread exited (${thread.exitCode}) before reporting '${type}'`);
    return null;
  }, { timeout, what: `the thread's '${type}' report` });
  // Resolves with the thread's exit code once it ends on its own.
  thread.exit = ({ timeout = 10_000 } = {}) => until(() => thread.exitCode !== null && { code: thread.exitCode }, {
    timeout, what: 'the thread to exit',
  }).then(({ code }) => code);
  t.after(async () => {
    await worker.terminate();
    for (const pid of thread.pids) killPid(pid);
  }, { timeout: 10_000 });
  return thread;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

// First in the file: the parent's peak RSS (maxRSS) is a high-water mark for the whole process.
describe('a flooding child cannot grow a busy parent', () => {
  const BLOCK_MS = 10_000;
  const BOUND = 64 * MB;

  test(`a parent that blocks ${BLOCK_MS / 1000} s while a child sends 1 KB messages as fast as it may`, { timeout: 60_000 }, async (t) => {
    const child = fork(fixture('flood.js'), [], { execArgv: [] });
    t.after(() => killPid(child.pid));

    // Each { i } must be the next in sequence: none lost, duplicated or reordered.
    let next = 0;
    let wrong = null;
    let done = null;
    child.on('message', (m) => {
      if ('done' in m) {
        done = m;
        return;
      }
      if (m.i !== next && wrong === null) wrong = { expected: next, got: m.i };
      next++;
    });

    await once(child, 'message');
    const baseline = process.memoryUsage().rss;
    const peakGrowth = () => process.resourceUsage().maxRSS * 1024 - baseline;
    // A slow handler: this thread runs no JavaScript and reads nothing for BLOCK_MS. This is the
    // scenario itself, not a wait for an event.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, BLOCK_MS);

    const blocked = peakGrowth();
    t.diagnostic(`RSS growth while blocked: ${(blocked / MB).toFixed(1)} MB`);
    // Fails here at once rather than waiting for the parent to drain what it buffered.
    assert.ok(blocked <= BOUND, `parent RSS grew ${(blocked / MB).toFixed(1)} MB while its JavaScript was blocked`);

    child.send('stop');
    await until(() => done, { timeout: 40_000, what: "the child's { done }" });
    const growth = peakGrowth();
    t.diagnostic(`${done.done + 1} messages; parent peak RSS growth ${(growth / MB).toFixed(1)} MB; ` +
      `child peak RSS ${(done.maxRSS / MB).toFixed(1)} MB`);
    assert.equal(wrong, null, `out of sequence: ${JSON.stringify(wrong)}`);
    assert.equal(next, done.done + 1, 'every message 0..done arrived');
    assert.ok(growth <= BOUND, `parent peak RSS grew ${(growth / MB).toFixed(1)} MB`);
  });
});

describe('several JavaScript environments', () => {
  test('the main thread and two worker threads each fork a child and exchange 100 messages, at once', { timeout: 60_000 }, async (t) => {
    const threads = [startThread(t, { job: 'echo', count: 100 }), startThread(t, { job: 'echo', count: 100 })];
    const main = echoRound(fork, { count: 100, onSpawn: (pid) => t.after(() => killPid(pid)) });
    const results = await Promise.all([main, ...threads.map((thread) => thread.next('result'))]);
    for (const [n, r] of results.entries()) {
      const where = n === 0 ? 'main thread' : `thread ${n}`;
      if (n > 0) assert.equal(r.reference, impl.reference, `${where} loaded the implementation under test`);
      assert.deepEqual(r.got, range(100), `${where}: echoes in order`);
      assert.deepEqual([r.code, r.signal], [0, null], `${where}: the child exits once disconnected`);
      assert.ok(isGone(r.pid));
    }
    // With its child gone, a thread has nothing left to do and ends on its own.
    for (const thread of threads) assert.equal(await thread.exit(), 0);
  });

  const ends = {
    exit: 'calls process.exit()',
    terminate: 'is terminated',
  };
  for (const [end, how] of Object.entries(ends)) {
    test(`a thread that ${how} while its child runs: the child sees the channel close and is reaped, no fd is left`, { timeout: 60_000 }, async (t) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-runtime-'));
      t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
      const marker = path.join(dir, 'marker');
      const before = openFds();

      const thread = startThread(t, { job: 'idle', marker, end });
      const { pid, reference } = await thread.next('ready');
      assert.equal(reference, impl.reference, 'the thread loaded the implementation under test');
      if (end === 'terminate') await thread.worker.terminate();
      assert.equal(await thread.exit(), end === 'exit' ? 0 : 1);

      await until(() => isGone(pid), { what: `child ${pid} to exit` });
      assert.equal(fs.readFileSync(marker, 'utf8'), 'disconnected', 'the child exited on disconnect');
      if (impl.reference) {
        // Node closes the thread's process handle with its event loop: nothing waits for the child.
        t.diagnostic(`Node leaves the child ${reaped(pid) ? 'reaped' : 'a zombie'}`);
      } else {
        await until(() => reaped(pid), { what: `child ${pid} to be reaped (not a zombie)` });
      }

      const fdList = (list) => list.map((f) => `${f.fd} → ${f.target}`);
      await until(() => openFds().length <= before.length, { timeout: 5_000 }).catch(() => {});
      const after = openFds();
      const added = after.filter((f) => !before.some((b) => b.fd === f.fd && b.target === f.target));
      assert.ok(after.length <= before.length, `fds ${before.length} -> ${after.length}, new: ${fdList(added).join(', ')}`);
    });
  }

  // Node 20 (checked with RC_REFERENCE=node) runs a cluster primary in a worker thread: isPrimary
  // holds there and cluster.fork() works, round-robin listening included.
  test('a cluster primary in a worker thread forks an HTTP worker, reaches it, and disconnects it', { timeout: 60_000 }, async (t) => {
    const thread = startThread(t, { job: 'cluster' });
    const r = await thread.next('result', { timeout: 30_000 });
    assert.equal(r.reference, impl.reference, 'the thread loaded the implementation under test');
    assert.equal(r.isPrimary, true);
    assert.equal(r.body, String(r.pid), 'the request reached the worker');
    assert.deepEqual([r.code, r.signal, r.exitedAfterDisconnect], [0, null, true]);
    await until(() => isGone(r.pid), { what: `worker ${r.pid} to exit` });
    assert.equal(await thread.exit(), 0);
  });

  // rust-cluster gives workers a parent-death signal, which Linux sends when the *thread* that
  // forked exits: workers must be forked from a thread that lives as long as the process.
  test("a cluster worker whose primary's thread exits leaves through its own disconnect, not a parent-death SIGKILL", { timeout: 60_000 }, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-runtime-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const marker = path.join(dir, 'marker');
    const thread = startThread(t, { job: 'clusterExit', marker });
    const { pid, reference } = await thread.next('ready', { timeout: 30_000 });
    assert.equal(reference, impl.reference, 'the thread loaded the implementation under test');
    assert.equal(await thread.exit(), 0);
    await until(() => isGone(pid), { what: `worker ${pid} to exit` });
    assert.equal(fs.readFileSync(marker, 'utf8'), 'exited 0');
  });
});

describe('reading on the JavaScript thread while it waits, on the reactor while it is busy', () => {
  const OURS_ONLY = impl.reference && "rust-cluster's own reactor thread";

  // How many times the reactor thread read this environment's channels for a busy JavaScript.
  const busyReads = () => require('../lib/native').binding.stats().busyReads;

  const framesIn = (child) => {
    const { binding } = require('../lib/native');
    return binding.stats().channels.find((c) => c.id === child._id).framesIn;
  };

  // Spins (JavaScript busy, never back in its loop) until `done()` or 10 s.
  function busyUntil(done) {
    const deadline = Date.now() + 10_000;
    while (!done() && Date.now() < deadline);
    return done();
  }

  test('200 round trips with a waiting parent are read by its own loop, not by the reactor thread', { skip: OURS_ONLY }, async (t) => {
    const child = fork(fixture('echo.js'));
    t.after(() => child.kill());
    const roundTrip = async (i) => {
      const reply = once(child, 'message');
      child.send(i);
      assert.equal((await reply)[0], i);
    };
    await roundTrip(-1);
    const before = busyReads();
    for (let i = 0; i < 200; i++) await roundTrip(i);
    // A loaded machine may keep the waiting thread off its CPU for a tick, and the reactor then
    // reads for it; without the loop's own reading, the reactor reads every reply.
    const read = busyReads() - before;
    assert.ok(read < 50, `the reactor thread read ${read} of 200 replies`);
  });

  for (const where of ['a timer', "a 'message' listener"]) {
    test(`a parent busy in ${where} still ACKs a received handle, so the child's next message arrives`, { skip: OURS_ONLY }, async (t) => {
      const child = fork(fixture('handle-sender.js'));
      t.after(() => child.kill());
      await once(child, 'message');
      const start = framesIn(child);
      // before, the handle, after: 'after' leaves the child only once the handle is ACKed.
      const acked = () => framesIn(child) >= start + 3;
      const received = [];
      const spun = new Promise((resolve) => {
        if (where === 'a timer') setTimeout(() => resolve(busyUntil(acked)), 0);
        child.on('message', (message, handle) => {
          received.push(handle ? `${message}+handle` : message);
          // A received server listens here too: it must not keep the test alive.
          handle?.close();
          if (message === 'before' && where !== 'a timer') resolve(busyUntil(acked));
        });
      });
      child.send('go');
      const busy = await spun;
      assert.ok(busy, `only ${framesIn(child) - start} of 3 frames were read while JavaScript was busy`);
      await until(() => received.length === 3, { what: 'the three messages' });
      assert.deepEqual(received, ['before', 'handle+handle', 'after']);
    });
  }
});

