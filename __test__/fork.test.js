'use strict';
// Behaviour of fork() against Node's documented child_process.fork. Runs against rust-cluster by
// default and against Node's built-in with RC_REFERENCE=node (which checks the tests themselves).
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { EventEmitter } = require('node:events');
const { Readable, Writable } = require('node:stream');
// Node's own spawn, used only to run fixture parent processes (not the code under test).
const harness = require('node:child_process');

const impl = require('./helpers/impl');
const { once, many, until } = require('./helpers/wait');

const { fork } = impl.child_process;
const OURS_ONLY = impl.reference && 'tests rust-cluster itself, not Node';

const fixture = (name) => path.join(__dirname, 'fixtures', 'fork', name);

const isRunning = (child) => child.pid !== undefined && child.exitCode === null && child.signalCode === null;

// Forks a fixture and makes sure the test leaves no child behind.
// Node 24's test runner gives test files a long execArgv (--report-signal=SIGUSR2 among it) that
// fork() would pass on by default, so fixtures start with none unless a test says otherwise.
function forkFixture(t, name, args = [], options = {}) {
  const child = fork(fixture(name), args, { execArgv: [], ...options });
  t.after(async () => {
    if (!isRunning(child)) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  });
  return child;
}

// For pids the fixtures report about themselves; never trusts a value that could hit init.
function killPid(pid) {
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {}
}

const nextMessage = async (child, options) => (await once(child, 'message', options))[0];

// The fixture's message describing how it was started (see fixtures/fork/report.js).
async function report(t, options, args = []) {
  const child = forkFixture(t, 'report.js', args, options);
  return { child, report: await nextMessage(child) };
}

// Records the names (and arguments) of the given events in the order they are emitted.
function recordEvents(emitter, names) {
  const seen = [];
  for (const name of names) emitter.on(name, (...args) => seen.push({ name, args }));
  return seen;
}

// Everything a stream yields, once it ends.
async function collect(stream) {
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => { text += chunk; });
  await once(stream, 'end');
  return text;
}

// A callback that records its calls, and a deadline-bound promise of its first call's arguments.
function spyCallback() {
  const calls = new EventEmitter();
  const seen = [];
  const callback = (...args) => {
    seen.push(args);
    calls.emit('call', ...args);
  };
  return { callback, seen, firstCall: once(calls, 'call') };
}

// Process group and session of a pid, fields 5 and 6 of /proc/<pid>/stat.
function groupAndSession(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const [, , pgid, sid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  return { pgid, sid };
}

const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

function tmpDir(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-fork-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('options', () => {
  test('args are passed after the module path', async (t) => {
    const { report: r } = await report(t, {}, ['a', 'b c', '']);
    assert.deepEqual(r.argv, ['a', 'b c', '']);
  });

  test('cwd sets the working directory', async (t) => {
    const cwd = fs.realpathSync(os.tmpdir());
    assert.notEqual(process.cwd(), cwd);
    const { report: r } = await report(t, { cwd });
    assert.equal(r.cwd, cwd);
  });

  test('env is used as given, not merged with process.env', async (t) => {
    const { report: r } = await report(t, { env: { RC_ONLY: 'yes' } });
    const expected = { RC_ONLY: 'yes' };
    // Node always propagates the coverage directory.
    if (process.env.NODE_V8_COVERAGE) expected.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
    // NODE_CHANNEL_* are consumed (deleted) by the child at start-up.
    assert.deepEqual(r.env, expected);
  });

  test('execArgv is passed to the child node', async (t) => {
    const { report: r } = await report(t, { execArgv: ['--expose-gc'] });
    assert.deepEqual(r.execArgv, ['--expose-gc']);
    assert.equal(r.gc, 'function');
  });

  test('execPath selects the executable', async (t) => {
    // A wrapper that marks the environment, then runs the real node with the same arguments.
    const wrapper = path.join(tmpDir(t), 'node-wrapper');
    fs.writeFileSync(wrapper, `#!/bin/sh\nRC_WRAPPED=1 exec '${process.execPath}' "$@"\n`, { mode: 0o755 });
    const { child, report: r } = await report(t, { execPath: wrapper });
    assert.equal(r.env.RC_WRAPPED, '1');
    assert.equal(child.spawnfile, wrapper);
  });

  test('nonexistent execPath: error ENOENT then close(-2, null), nothing thrown', async (t) => {
    const execPath = '/nonexistent/node';
    const child = fork(fixture('report.js'), [], { execPath });
    const events = recordEvents(child, ['spawn', 'error', 'exit', 'close']);
    assert.equal(child.pid, undefined);
    await once(child, 'close');
    assert.deepEqual(events.map((e) => e.name), ['error', 'close']);
    const [err] = events[0].args;
    assert.equal(err.code, 'ENOENT');
    assert.equal(err.errno, -2);
    assert.equal(err.syscall, `spawn ${execPath}`);
    assert.equal(err.path, execPath);
    assert.deepEqual(events[1].args, [-2, null]);
    assert.equal(child.exitCode, -2);
  });

  test('silent: stdin is writable, stdout and stderr are readable pipes', async (t) => {
    const child = forkFixture(t, 'stdio.js', [], { silent: true });
    assert.ok(child.stdin instanceof Writable);
    assert.ok(child.stdout instanceof Readable);
    assert.ok(child.stderr instanceof Readable);
    const [out, err] = [collect(child.stdout), collect(child.stderr)];
    child.stdin.end('ping');
    assert.equal(await out, 'out\nin:ping\n');
    assert.equal(await err, 'err\n');
  });

  test("stdio: 'ipc' at index 5 becomes the child's channel fd", async (t) => {
    const stdio = ['inherit', 'inherit', 'inherit', 'ignore', 'ignore', 'ipc'];
    const { child, report: r } = await report(t, { stdio });
    assert.equal(r.channelFd, 5);
    assert.equal(child.stdio[5], null);
  });

  test("stdio: 'pipe', 'inherit' and 'ignore' per fd", async (t) => {
    const { child, report: r } = await report(t, { stdio: ['pipe', 'inherit', 'ignore', 'ipc'] });
    assert.ok(child.stdin instanceof Writable);
    assert.equal(child.stdout, null);
    assert.equal(child.stderr, null);
    assert.match(r.fds[0], /^(socket|pipe):/);
    assert.equal(r.fds[1], fs.readlinkSync('/proc/self/fd/1'));
    assert.equal(r.fds[2], '/dev/null');
  });

  test('stdio: a numeric fd is given to the child', async (t) => {
    const file = path.join(tmpDir(t), 'out.txt');
    const fd = fs.openSync(file, 'w');
    t.after(() => fs.closeSync(fd));
    const child = forkFixture(t, 'stdio.js', [], { stdio: ['ignore', fd, 'ignore', 'ipc'] });
    assert.equal(child.stdout, null);
    await once(child, 'close');
    assert.equal(fs.readFileSync(file, 'utf8'), 'out\nin:\n');
  });

  test("stdio without 'ipc' throws ERR_CHILD_PROCESS_IPC_REQUIRED", (t) => {
    assert.throws(() => forkFixture(t, 'echo.js', [], { stdio: ['pipe', 'pipe', 'pipe'] }), {
      code: 'ERR_CHILD_PROCESS_IPC_REQUIRED',
    });
  });

  test("stdio with two 'ipc' throws ERR_IPC_ONE_PIPE", (t) => {
    assert.throws(() => forkFixture(t, 'echo.js', [], { stdio: ['pipe', 'pipe', 'pipe', 'ipc', 'ipc'] }), {
      code: 'ERR_IPC_ONE_PIPE',
    });
  });

  // The checks fork() makes before it spawns anything, with Node's codes and messages on every line.
  describe("argument checks, as the running line's fork() makes them", () => {
    const child_process = require('node:child_process');
    // What Node's own fork() throws for these arguments, to compare with.
    const thrownBy = (forkFn, ...args) => {
      try {
        forkFn(...args);
      } catch (err) {
        return { name: err.name, code: err.code, message: err.message, string: String(err) };
      }
      return null;
    };
    const cases = {
      'args that is not an array (a number)': ['m', 1],
      'args that is not an array (a string)': ['m', 'str'],
      'args that is not an array (a boolean)': ['m', true],
      'a NUL byte in the module path': ['m\u0000x'],
      'a NUL byte in an argument': ['m', ['ok', 'a\u0000b'], { execArgv: ['--no-warnings'] }],
      'a NUL byte in execPath': ['m', [], { execPath: 'a\u0000b' }],
      'a NUL byte in execArgv': ['m', [], { execArgv: ['a\u0000b'] }],
      'a NUL byte in cwd': ['m', [], { cwd: 'a\u0000b' }],
      'a NUL byte in an env key': ['m', [], { env: { 'A\u0000': '1' } }],
      'a NUL byte in an env value': ['m', [], { env: { A: '1\u0000' } }],
      'a timeout that is a string': ['m', [], { timeout: '100' }],
      'a timeout that is a boolean': ['m', [], { timeout: true }],
      'a timeout that is negative': ['m', [], { timeout: -1 }],
      'a timeout that is not an integer': ['m', [], { timeout: 1.5 }],
    };
    for (const [label, args] of Object.entries(cases)) {
      test(`${label}: the same error as Node's, thrown synchronously`, () => {
        const expected = thrownBy(child_process.fork, ...args);
        assert.ok(expected, 'Node throws');
        assert.deepEqual(thrownBy(fork, ...args), expected);
      });
    }
  });

  // Tools (APMs, test runners) watch spawns on these channels.
  test("a forked child is published on diagnostics_channel 'child_process' (and traced on lines that trace spawns)", async (t) => {
    const dc = require('node:diagnostics_channel');
    const published = [];
    const onChild = (message) => published.push(['child_process', message.process]);
    dc.subscribe('child_process', onChild);
    t.after(() => dc.unsubscribe('child_process', onChild));
    const traced = [];
    const tracing = typeof dc.tracingChannel === 'function' ? dc.tracingChannel('child_process.spawn') : undefined;
    const handlers = {
      start: (m) => traced.push(['start', m.process]),
      end: (m) => traced.push(['end', m.process]),
      error: (m) => traced.push(['error', m.process]),
    };
    tracing?.subscribe(handlers);
    t.after(() => tracing?.unsubscribe(handlers));
    const child = forkFixture(t, 'echo.js');
    assert.deepEqual(published, [['child_process', child]], 'published before fork() returns');
    // Node's own spawn says whether this line traces it.
    const probe = require('node:child_process').fork(fixture('echo.js'), [], { execArgv: [] });
    probe.kill('SIGKILL');
    const lineTraces = traced.some(([, p]) => p === probe);
    if (lineTraces) assert.deepEqual(traced.filter(([, p]) => p === child).map(([kind]) => kind), ['start', 'end']);
    else assert.deepEqual(traced, []);
  });

  // Code that matches on the text sees what Node's internal errors print.
  test('errors print as Node\'s do: `Name [CODE]: message` from String(), the stack and inspect', (t) => {
    const err = (() => {
      try {
        forkFixture(t, 'echo.js', [], { stdio: ['pipe', 'pipe', 'pipe', 'ipc', 'ipc'] });
      } catch (e) {
        return e;
      }
    })();
    const expected = 'Error [ERR_IPC_ONE_PIPE]: Child process can have only one IPC pipe';
    assert.equal(String(err), expected);
    assert.equal(err.stack.split('\n')[0], expected);
    assert.equal(require('node:util').inspect(err).split('\n')[0], expected);
    assert.equal(err.name, 'Error');
    assert.deepEqual(Object.keys(err), ['code']);
  });

  test("serialization: 'advanced' carries Map, Set, BigInt, typed arrays and undefined both ways", async (t) => {
    const child = forkFixture(t, 'advanced-echo.js', [], { serialization: 'advanced' });
    const message = {
      map: new Map([['k', { deep: 1 }]]),
      set: new Set([1, 'two']),
      big: 2n ** 70n,
      bytes: new Uint8Array([0, 1, 255]),
      floats: new Float64Array([0.5, -1]),
      missing: undefined,
    };
    child.send(message);
    const reply = await nextMessage(child);
    assert.deepEqual(reply.types, {
      map: '[object Map]',
      set: '[object Set]',
      big: '[object BigInt]',
      bytes: '[object Uint8Array]',
      floats: '[object Float64Array]',
      missing: '[object Undefined]',
    });
    assert.deepStrictEqual(reply.message, message);
  });

  test('detached: the child leads its own session and process group', async (t) => {
    const detached = forkFixture(t, 'idle.js', [], { detached: true });
    const attached = forkFixture(t, 'idle.js');
    await Promise.all([once(detached, 'message'), once(attached, 'message')]);
    assert.deepEqual(groupAndSession(detached.pid), { pgid: detached.pid, sid: detached.pid });
    assert.notEqual(groupAndSession(attached.pid).sid, attached.pid);
  });

  test('uid and gid set the child credentials', { skip: process.getuid() !== 0 && 'needs root' }, async (t) => {
    const { report: r } = await report(t, { uid: 65534, gid: 65534 });
    assert.equal(r.uid, 65534);
    assert.equal(r.gid, 65534);
    assert.ok(!r.groups.includes(0), `root's groups must be dropped, got ${r.groups}`);
  });

  test('timeout kills the child with killSignal', async (t) => {
    const child = forkFixture(t, 'idle.js', [], { timeout: 100, killSignal: 'SIGUSR2' });
    assert.deepEqual(await once(child, 'exit'), [null, 'SIGUSR2']);
    assert.equal(child.killed, true);
  });

  test('signal: aborting kills the child and emits an AbortError', async (t) => {
    const controller = new AbortController();
    const child = forkFixture(t, 'idle.js', [], { signal: controller.signal });
    await once(child, 'message');
    const exited = once(child, 'exit');
    const errored = once(child, 'error');
    controller.abort();
    const [err] = await errored;
    assert.equal(err.name, 'AbortError');
    assert.deepEqual(await exited, [null, 'SIGTERM']);
  });
});

describe('events and properties', () => {
  test("spawn, message, disconnect, exit, close in Node's order", async (t) => {
    const child = forkFixture(t, 'send-and-exit.js');
    assert.equal(typeof child.pid, 'number');
    assert.equal(child.connected, true);
    assert.equal(child.exitCode, null);
    assert.equal(child.signalCode, null);
    const events = recordEvents(child, ['spawn', 'message', 'disconnect', 'exit', 'close', 'error']);
    await once(child, 'close');
    const names = events.map((e) => e.name);
    assert.equal(names[0], 'spawn');
    assert.equal(names.at(-1), 'close');
    assert.deepEqual([...names].sort(), ['close', 'disconnect', 'exit', 'message', 'spawn']);
    // 'exit' and 'disconnect' race; 'close' waits for both.
    assert.deepEqual(events.find((e) => e.name === 'message').args[0], 'bye');
    assert.deepEqual(events.find((e) => e.name === 'exit').args, [3, null]);
    assert.deepEqual(events.find((e) => e.name === 'close').args, [3, null]);
    assert.equal(child.exitCode, 3);
    assert.equal(child.signalCode, null);
    assert.equal(child.connected, false);
  });

  // Node reads the channel and reaps on the same loop, so its 'exit' can overtake the last messages.
  test("messages a child wrote before it died are all emitted before 'exit'", { skip: OURS_ONLY }, async (t) => {
    const child = forkFixture(t, 'burst-and-exit.js');
    const received = [];
    child.on('message', (m) => received.push(m));
    assert.deepEqual(await once(child, 'exit'), [5, null]);
    assert.deepEqual(received, Array.from({ length: 1000 }, (_, i) => i));
  });

  test("'close' waits for stdio to end even after 'exit'", async (t) => {
    const child = forkFixture(t, 'orphan-stdout.js', [], { silent: true });
    const events = recordEvents(child, ['exit', 'close']);
    child.stdout.on('end', () => events.push({ name: 'stdout end' })).resume();
    const holder = await nextMessage(child);
    t.after(() => killPid(holder));
    await once(child, 'exit');
    // A grandchild still holds stdout open; releasing it must be what lets 'close' through.
    killPid(holder);
    await until(() => events.some((e) => e.name === 'close'), { what: "'close'" });
    assert.deepEqual(events.map((e) => e.name), ['exit', 'stdout end', 'close']);
  });

  test('pid, spawnfile and spawnargs describe the child', async (t) => {
    const { child, report: r } = await report(t, { execArgv: ['--expose-gc'] }, ['x']);
    assert.equal(child.pid, r.pid);
    assert.equal(child.spawnfile, process.execPath);
    assert.deepEqual(child.spawnargs, [process.execPath, '--expose-gc', fixture('report.js'), 'x']);
  });

  test('kill() sends SIGTERM by default, or the named or numbered signal', async (t) => {
    const cases = [[undefined, 'SIGTERM'], ['SIGINT', 'SIGINT'], [os.constants.signals.SIGUSR2, 'SIGUSR2']];
    const children = cases.map(() => forkFixture(t, 'idle.js'));
    await Promise.all(children.map((child) => once(child, 'message')));
    await Promise.all(
      cases.map(async ([signal, name], i) => {
        const child = children[i];
        assert.equal(child.killed, false);
        const exited = once(child, 'exit');
        assert.equal(child.kill(signal), true);
        assert.equal(child.killed, true);
        assert.deepEqual(await exited, [null, name]);
        assert.equal(child.signalCode, name);
        assert.equal(child.exitCode, null);
        assert.equal(child.kill(), false, 'kill() after exit');
      }),
    );
  });

  test("kill('SIGFOO') throws ERR_UNKNOWN_SIGNAL and sends nothing", async (t) => {
    const child = forkFixture(t, 'echo.js');
    assert.throws(() => child.kill('SIGFOO'), { code: 'ERR_UNKNOWN_SIGNAL' });
    assert.equal(child.killed, false);
    child.send('still here');
    assert.equal(await nextMessage(child), 'still here');
  });

  // A separate parent process, so that its exit (or not) is observable.
  describe('ref() and unref() keep the parent alive or not', () => {
    function runParent(t, calls) {
      const parent = harness.spawn(process.execPath, [fixture('keepalive-parent.js'), calls.join(',')], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const lines = [];
      readline.createInterface({ input: parent.stdout }).on('line', (line) => lines.push(line));
      const exited = once(parent, 'exit');
      const childPid = async () => {
        const ready = await until(() => lines.find((l) => l.startsWith('ready ')), { what: 'ready' });
        const pid = Number(ready.split(' ')[1]);
        assert.ok(Number.isInteger(pid) && pid > 1, ready);
        t.after(() => killPid(pid));
        return pid;
      };
      t.after(() => parent.exitCode === null && parent.signalCode === null && parent.kill('SIGKILL'));
      return { lines, exited, childPid };
    }

    test('parent exits on its own once the child and its channel are unref()d', async (t) => {
      const { lines, exited, childPid } = runParent(t, ['unref', 'channel.unref']);
      const pid = await childPid();
      assert.deepEqual(await exited, [0, null]);
      assert.ok(!lines.includes('alive'));
      assert.ok(alive(pid), 'the child outlives the parent');
    });

    // Either handle alone keeps the parent alive.
    const keepAlive = [[], ['unref'], ['channel.unref'], ['unref', 'channel.unref', 'ref'], ['unref', 'channel.unref', 'channel.ref']];
    for (const calls of keepAlive) {
      test(`parent stays alive until the child exits: ${calls.join(', ') || 'no calls'}`, async (t) => {
        const { lines, exited, childPid } = runParent(t, calls);
        const pid = await childPid();
        // Positive evidence of being held open, rather than waiting for an exit that doesn't come.
        await until(() => lines.includes('alive'), { what: "the parent's 'alive'" });
        process.kill(pid, 'SIGTERM');
        assert.deepEqual(await exited, [0, null]);
      });
    }
  });
});

describe('channel', () => {
  test('10,000 messages keep their order both ways', { timeout: 30_000 }, async (t) => {
    const child = forkFixture(t, 'echo.js');
    const count = 10_000;
    const replies = many(child, 'message', count, { timeout: 25_000 });
    for (let i = 0; i < count; i++) child.send({ i });
    const received = (await replies).map(([m]) => m.i);
    assert.deepEqual(received, Array.from({ length: count }, (_, i) => i));
  });

  test("channel.fd is the number of the parent's end, a socket in this process", async (t) => {
    const child = forkFixture(t, 'echo.js');
    const { fd } = child.channel;
    assert.equal(typeof fd, 'number');
    assert.match(fs.readlinkSync(`/proc/self/fd/${fd}`), /^socket:/);
    child.send('ping');
    assert.equal(await nextMessage(child), 'ping', 'reading it took nothing from the channel');
  });

  test('multi-byte UTF-8 text is decoded correctly in both directions', async (t) => {
    const text = 'héllo wörld — 日本語 🎉';
    const child = forkFixture(t, 'unicode.js');
    assert.equal(await nextMessage(child), text);
    child.send(text);
    assert.deepEqual(await nextMessage(child), [...text].map((c) => c.codePointAt(0)));
  });

  test('text of 3-byte characters arrives whole at each size the writer handles its own way', { timeout: 30_000 }, async (t) => {
    const child = forkFixture(t, 'echo.js');
    // The worst case for UTF-8 per UTF-16 unit, around the stack buffer's size (1024 units), in a
    // heap buffer sized for the worst case, and past that (measured first).
    for (const n of [1020, 1021, 1022, 5000, (1 << 20) - 2, (1 << 20) + 10]) {
      const text = '日'.repeat(n);
      child.send(text);
      const echoed = await nextMessage(child, { timeout: 20_000 });
      assert.ok(echoed === text, `${n} characters: got ${echoed.length}`);
    }
  });

  test('an 8 MB message arrives whole', { timeout: 30_000 }, async (t) => {
    const child = forkFixture(t, 'echo.js');
    // Multi-byte characters make reads split inside characters as well as inside the frame.
    const big = 'abcdefg 日本 🎉 '.repeat(8 * 1024 * 1024 / 32);
    child.send(big);
    const echoed = await nextMessage(child, { timeout: 25_000 });
    assert.equal(echoed.length, big.length);
    assert.ok(echoed === big, 'content differs');
  });

  test('send() returns a boolean and calls back once with null', async (t) => {
    const child = forkFixture(t, 'echo.js');
    const { callback, seen, firstCall } = spyCallback();
    assert.equal(child.send('first', callback), true);
    assert.equal(await nextMessage(child), 'first');
    await firstCall;
    // A later round trip gives a repeated callback time to show up.
    child.send('second');
    assert.equal(await nextMessage(child), 'second');
    assert.deepEqual(seen, [[null]]);
  });

  test('send() after disconnect fails with ERR_IPC_CHANNEL_CLOSED', async (t) => {
    const child = forkFixture(t, 'echo.js');
    child.disconnect();
    const { callback, firstCall } = spyCallback();
    assert.equal(child.send('late', callback), false);
    assert.equal((await firstCall)[0].code, 'ERR_IPC_CHANNEL_CLOSED');
    // Without a callback the error goes to 'error'.
    const errored = once(child, 'error');
    assert.equal(child.send('later'), false);
    assert.equal((await errored)[0].code, 'ERR_IPC_CHANNEL_CLOSED');
  });

  test('send() rejects bad messages synchronously and the channel keeps working', async (t) => {
    const child = forkFixture(t, 'echo.js');
    assert.throws(() => child.send(), { code: 'ERR_MISSING_ARGS' });
    assert.throws(() => child.send(() => {}), { code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => child.send(Symbol('s')), { code: 'ERR_INVALID_ARG_TYPE' });
    const circular = {};
    circular.self = circular;
    assert.throws(() => child.send(circular), TypeError);
    child.send('fine');
    assert.equal(await nextMessage(child), 'fine');
  });

  test("disconnect() emits 'disconnect' on both sides; a second one is ERR_IPC_DISCONNECTED", async (t) => {
    const child = forkFixture(t, 'disconnect-exit.js');
    await once(child, 'message');
    const disconnected = once(child, 'disconnect');
    const exited = once(child, 'exit');
    child.disconnect();
    assert.equal(child.connected, false);
    await disconnected;
    assert.deepEqual(await exited, [42, null], "the child's 'disconnect' handler ran");
    const errored = once(child, 'error');
    child.disconnect();
    assert.equal((await errored)[0].code, 'ERR_IPC_DISCONNECTED');
  });

  test("the child closing its end emits 'disconnect' while it still runs", async (t) => {
    const child = forkFixture(t, 'self-disconnect.js');
    await once(child, 'disconnect');
    assert.equal(child.connected, false);
    assert.ok(isRunning(child));
  });

  test("messages with a NODE_ cmd are not emitted as 'message'", async (t) => {
    const child = forkFixture(t, 'internal-message.js');
    const messages = [];
    child.on('message', (m) => messages.push(m));
    await until(() => messages.some((m) => m.cmd === 'after'), { what: "'after'" });
    assert.deepEqual(messages, [{ cmd: 'after' }]);
  });

  // Node's fork() has no such options; rust-cluster's cluster uses internal ones of that shape,
  // which the public fork() must not reach.
  test('options named like internal ones (worker, extraEnv) are ignored, as Node ignores them', async (t) => {
    const child = forkFixture(t, 'cluster-like.js', [], { worker: 1, extraEnv: { NODE_UNIQUE_ID: '1', RC_EXTRA: 'x' } });
    const messages = [];
    const internal = [];
    child.on('message', (m) => messages.push(m));
    child.on('internalMessage', (m) => internal.push(m));
    await until(() => messages.some((m) => m.cmd === 'after'), { what: "'after'" });
    assert.deepEqual(messages[0], { uniqueId: null, extra: null });
    assert.equal(internal.filter((m) => m.cmd === 'NODE_CLUSTER').length, 1, 'NODE_CLUSTER reached JavaScript, not a cluster primary');
  });

  // Node writes a send at once, so nothing the parent does next can overtake it; rust-cluster
  // batches a tick's sends, and must flush them first.
  describe('a send made just before the channel ends is not overtaken', () => {
    function lastWords(t, how) {
      const parent = harness.spawn(process.execPath, [fixture('last-words-parent.js'), how], { stdio: ['ignore', 'pipe', 'inherit'] });
      t.after(() => parent.exitCode === null && parent.signalCode === null && parent.kill('SIGKILL'));
      const lines = [];
      readline.createInterface({ input: parent.stdout }).on('line', (line) => lines.push(line));
      return { lines, closed: once(parent.stdout, 'close') };
    }

    test('process.exit() right after send(): the child gets the message', async (t) => {
      const { lines, closed } = lastWords(t, 'exit');
      await closed; // the child shares the parent's stdout and leaves on 'disconnect'
      assert.deepEqual(lines, ['got last words']);
    });

    test("kill() right after send(msg, callback): the callback gets no error", async (t) => {
      const { lines } = lastWords(t, 'kill');
      await until(() => lines.some((l) => l.startsWith('callback ')), { what: 'the callback' });
      assert.ok(lines.includes('callback null'), lines.join(' | '));
    });
  });

  // Node waits for the rest of such a frame; rust-cluster's size guard closes the channel, and must
  // not turn that into a crash of a program that runs fine on Node.
  test("a frame announced over maxMessageSize does not crash a parent with no 'error' listener", async (t) => {
    const warnings = [];
    const onWarning = (warning) => warnings.push(warning);
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));
    const child = forkFixture(t, 'oversized-header.js', [], { serialization: 'advanced', maxMessageSize: 1024 });
    await Promise.all([once(child, 'exit'), once(child, 'disconnect')]);
    if (!impl.reference) {
      const warning = await until(() => warnings.find((w) => w.code === 'ERR_IPC_MESSAGE'), { what: 'the warning' });
      assert.match(warning.message, /limit of 1024 bytes/);
    }
  });

  // Node's own parent crashes on a malformed frame; rust-cluster reports it instead.
  test("a malformed frame from the child is an 'error', not a crash", { skip: OURS_ONLY }, async (t) => {
    const child = forkFixture(t, 'garbage.js');
    const [err] = await once(child, 'error');
    assert.ok(err instanceof Error);
  });
});

test("fork never goes through Node's child_process or cluster", { skip: OURS_ONLY }, async (t) => {
  const parent = harness.spawn(process.execPath, [fixture('no-builtin-spawn-parent.js')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => parent.exitCode === null && parent.kill('SIGKILL'));
  const [out, err] = [collect(parent.stdout), collect(parent.stderr)];
  const [code] = await once(parent, 'exit');
  assert.equal(code, 0, await err);
  assert.equal(await out, 'echoed\n');
});
