'use strict';
// Reliability (issue "Reliability"), light counts: bad input on the channel, faults, load,
// security. Heavy counts of the same scenarios: stress.test.js (RC_STRESS=1). Scenario code lives
// in fixtures/reliability/scenarios.js; every scenario checks for zombies, and the suite checks
// the parent's fds and memory around each group.
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const harness = require('node:child_process'); // runs fixture parents only
const impl = require('./helpers/impl');
const { once } = require('./helpers/wait');
const S = require('./fixtures/reliability/scenarios');

const OURS_ONLY = impl.reference && 'rust-cluster behaviour: Node crashes or leaves the process behind here';
const MB = S.MB;

// Around a group: the parent's fd count is back where it was, RSS grew less than `rssBound`.
function guard(rssBound) {
  const state = {};
  before(async () => {
    await S.warmUp(null);
    await S.killLeftovers();
    state.fds = S.fdCount();
    state.rss = S.rss();
  });
  after(async () => {
    await S.killLeftovers();
    await require('./helpers/wait').until(() => S.fdCount() <= state.fds, { timeout: 5000 }).catch(() => {});
    assert.ok(S.fdCount() <= state.fds, `parent fds grew: ${state.fds} -> ${S.fdCount()}`);
    const growth = S.rss() - state.rss;
    assert.ok(growth < rssBound, `parent RSS grew ${(growth / MB).toFixed(1)} MB (bound ${rssBound / MB} MB)`);
  });
}

describe('bad input on the channel', { skip: OURS_ONLY }, () => {
  guard(64 * MB);
  let witness;
  before(() => {
    witness = S.forkChild(null, 'raw.js');
  });
  after(() => S.killLeftovers());
  // Every case ends with the other child still exchanging messages.
  const withWitness = (fn) => async (t) => {
    const result = await fn(t);
    await S.roundTrips(witness, 3);
    return result;
  };

  test('invalid JSON: an error, and the next line still arrives', withWitness(S.badJson));
  test('NUL bytes: an error per line, the next line still arrives', withWitness(S.nulBytes));
  test("invalid UTF-8 is replaced by U+FFFD as Node's StringDecoder does", withWitness(S.badUtf8));
  test('a line over maxMessageSize: an error, then the channel closes', withWitness(async (t) => {
    const { peakGrowth } = await S.overLimit(t, { limit: 64 << 10, size: 8 * MB });
    assert.ok(peakGrowth < 32 * MB, `buffered ${(peakGrowth / MB).toFixed(1)} MB for a 64 KiB limit`);
  }));
  test('a whole line over maxMessageSize in one write is refused too', withWitness(S.overLimitWhole));
  test('advanced mode: an unreadable payload is an error; an oversized length prefix closes', withWitness(S.advancedGarbage));
  test('channel closed in the middle of a line: nothing delivered, a clean disconnect', withWitness(S.partialThenClose));
  test('a NODE_HANDLE with no fd is NACKed and not delivered', withWitness(S.handleWithoutFd));
  // Stock Node cannot send an fd without a NODE_HANDLE; a python3 helper shares the child's socket.
  for (const count of [1, 253]) {
    test(`${count} fd(s) with no NODE_HANDLE: not delivered in place of the next real handle, none leaked`, withWitness(async (t) => {
      const r = await S.strayFd(t, { count });
      if (r.skipped) t.skip(r.skipped);
    }));
  }
});

describe('faults', () => {
  guard(64 * MB);
  test('a child SIGKILLed while a handle is in flight (20×)', {
    skip: impl.reference && "Node never closes a sent socket that was not ACKed before the child died: its fd leaks",
  }, (t) => S.killWithHandleInFlight(t, 20));
  test('a child SIGKILLed while the parent writes a burst (5 × 16 MB)', (t) =>
    S.killDuringBurst(t, { rounds: 5, messages: 1000, size: 16 << 10 }));
  test('fork/kill cycles (50)', (t) => S.forkKillCycles(t, { cycles: 50, parallel: 10 }));
  test('children that ignore SIGTERM: kill() then kill("SIGKILL") (5×)', (t) => S.ignoresSigterm(t, 5));
  test('a round-robin worker SIGKILLed with connections queued for it', { skip: OURS_ONLY }, async (t) => {
    const r = await S.rrWorkerKilled(t, { connections: 20 });
    t.diagnostic(JSON.stringify(r));
    assert.equal(r.answered + r.closed, 20, 'every client connection ends');
    assert.equal(r.closed, 0, `connections lost: ${JSON.stringify(r)}`);
    assert.ok(r.fdsAfter <= r.fdsBefore, `primary fds ${r.fdsBefore} -> ${r.fdsAfter}`);
  });
  test('a primary whose fd table is full sheds round-robin connections, then serves again', { timeout: 60_000 }, async (t) => {
    // A low ulimit in a shell, then the fixture primary in its place.
    const fixture = path.join(__dirname, 'fixtures', 'reliability', 'cluster-emfile.js');
    const primary = harness.spawn('sh', ['-c', 'ulimit -n 256 && exec "$@"', 'sh', process.execPath, fixture], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    t.after(() => primary.kill('SIGKILL'));
    const lines = [];
    const arrived = new (require('node:events'))();
    let buf = '';
    primary.stdout.setEncoding('utf8').on('data', (d) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        lines.push(JSON.parse(buf.slice(0, nl)));
        buf = buf.slice(nl + 1);
        arrived.emit('line');
      }
    });
    const next = async (key) => {
      for (;;) {
        const at = lines.findIndex((l) => key in l);
        if (at !== -1) return lines.splice(at, 1)[0][key];
        await once(arrived, 'line', { timeout: 20_000 });
      }
    };
    // How one client connection ends: the worker's answer, or '' if it was closed without one.
    const request = (port) => new Promise((resolve) => {
      const socket = require('node:net').connect(port, '127.0.0.1');
      let data = '';
      socket.setEncoding('utf8').on('data', (d) => { data += d; });
      socket.on('error', () => {});
      // A connection left in the backlog would never end: give up on it after 10 s of silence.
      socket.setTimeout(10_000, () => {
        data = 'left hanging';
        socket.destroy();
      });
      socket.on('close', () => resolve(data));
    });
    const port = await next('port');
    assert.match(await request(port), /^w\d$/);
    primary.stdin.write('hog\n');
    assert.ok((await next('hogged')) > 0);
    for (let i = 0; i < 3; i++) assert.equal(await request(port), '', 'shed at once, not left hanging');
    primary.stdin.write('free\n');
    await next('freed');
    assert.match(await request(port), /^w\d$/, 'serving again');
  });
  test('a primary SIGKILLed leaves no worker behind (3 blocked workers)', { skip: OURS_ONLY }, (t) =>
    S.primaryKilled(t, { rounds: 1, workers: 3 }));
});

describe('load', () => {
  // RSS after 100k-message bursts is mostly heap V8 keeps (60–115 MB seen), not a leak per message.
  guard(160 * MB);
  test('100,000 messages each way through one channel: none lost, duplicated, reordered', async (t) => {
    const r = await S.bothWays(t, { n: 100_000, size: 24 });
    assert.deepEqual(r, { parentGot: { received: 100_000, bad: 0, first: null }, childGot: { received: 100_000, bad: 0, first: null } });
  });
  test('20,000 messages each way, advanced serialization', async (t) => {
    const r = await S.bothWays(t, { n: 20_000, size: 24, serialization: 'advanced' });
    assert.deepEqual(r, { parentGot: { received: 20_000, bad: 0, first: null }, childGot: { received: 20_000, bad: 0, first: null } });
  });
  test('10 children at once, 5,000 messages each way on each', async (t) => {
    const results = await S.manyChildren(t, { children: 10, n: 5_000, size: 24 });
    for (const r of results) {
      assert.deepEqual(r, { parentGot: { received: 5_000, bad: 0, first: null }, childGot: { received: 5_000, bad: 0, first: null } });
    }
  });
  test('a slow consumer: send() returns false, and a sender that waits keeps memory bounded', async (t) => {
    const r = await S.slowConsumer(t, { messages: 1500, size: 64 << 10, every: 50, blockMs: 20 });
    t.diagnostic(`send() refused ${r.refused}×, peak RSS growth ${(r.peakGrowth / MB).toFixed(1)} MB for ${(1500 * 64) / 1024} MB sent`);
    assert.ok(r.refused > 0, 'send() never returned false');
    assert.deepEqual(r.report, { op: 'report', received: 1500, bad: 0, first: null });
    assert.ok(r.peakGrowth < 48 * MB, `peak RSS growth ${(r.peakGrowth / MB).toFixed(1)} MB`);
  });
});

describe('security', () => {
  const report = async (t, args, options) => (await S.nextMessage(S.forkChild(t, 'report.js', args, options)))[0];

  // Node's own fork leaks every fd of the parent that is not close-on-exec: rust-cluster only.
  test('a child inherits only stdio, its channel and what Node opens itself', { skip: OURS_ONLY }, async (t) => {
    // The fixture parent gets fds 3 and 4 from us without close-on-exec, and opens files and sockets.
    const proc = harness.spawn(process.execPath, [S.fixture('fd-parent.js')], { stdio: ['ignore', 'pipe', 'inherit', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    const [code] = await once(proc, 'close', { timeout: 30_000 });
    assert.equal(code, 0);
    const { parent, ours, node } = JSON.parse(out);
    // Sockets and pipes have a unique identity (inode); so have the files it opened (rc-fds-*).
    const unique = (f) => /^(socket|pipe):\[\d+\]$/.test(f.target) || f.target.includes('/rc-fds-');
    const parentOnly = new Set(parent.filter((f) => f.fd > 2 && unique(f)).map((f) => f.target));
    assert.ok(parentOnly.size >= 6, `the fixture parent holds extra fds: ${JSON.stringify(parent)}`);
    const leaked = ours.filter((f) => parentOnly.has(f.target));
    assert.deepEqual(leaked, [], "the parent's own fds must not reach the child");
    ours.sort((a, b) => a.fd - b.fd);
    assert.deepEqual(ours.slice(0, 4).map((f) => f.fd), [0, 1, 2, 3]);
    assert.match(ours[3].target, /^socket:/, 'fd 3 is the channel');
    // Node's fork leaks the parent's non-close-on-exec fds; apart from those, the same kinds of fd.
    const kind = (f) => f.target.replace(/\[\d+\]$/, '');
    const kinds = (list) => list.filter((f) => !parentOnly.has(f.target)).map(kind).sort();
    assert.deepEqual(kinds(ours), kinds(node));
  });

  test('no shell: arguments pass through literally', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "rc argv 'q' $(x) "));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'report.js');
    fs.copyFileSync(S.fixture('report.js'), script);
    const pwned = path.join(dir, 'pwned');
    const args = ['a b', '"double"', "'single'", `$(touch ${pwned}1)`, `\`touch ${pwned}2\``, `; touch ${pwned}3`,
      `| touch ${pwned}4`, '*', '$HOME', '', '\\n', 'x\ny', '--', '>out', '&&', 'é日😀'];
    const r = (await S.nextMessage(impl.child_process.fork(script, args))).at(0);
    assert.deepEqual(r.argv, args);
    assert.deepEqual(fs.readdirSync(dir).sort(), ['report.js']);
  });

  test('uid/gid drop privileges', { skip: process.getuid() !== 0 && 'needs root' }, async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-ids-'));
    fs.chmodSync(dir, 0o755);
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'report.js');
    fs.copyFileSync(S.fixture('report.js'), script);
    fs.chmodSync(script, 0o644);
    const child = impl.child_process.fork(script, [], { uid: 65534, gid: 65534 });
    const [r] = await S.nextMessage(child);
    assert.deepEqual([r.ids.uid, r.ids.euid, r.ids.gid, r.ids.egid], [65534, 65534, 65534, 65534]);
    assert.ok(!r.ids.groups.includes(0), `still in group 0: ${r.ids.groups}`);
    assert.equal(r.setuidRoot, 'EPERM');
  });

  test('env is used as given: no parent variable leaks in', async (t) => {
    process.env.RC_LEAK_CANARY = 'parent-only';
    t.after(() => delete process.env.RC_LEAK_CANARY);
    const env = { ONLY: 'this', WEIRD: 'a=b\nc "d" $(e)', EMPTY: '' };
    // Node appends its own NODE_CHANNEL_* after the user's, and the child reads the user's (bogus)
    // one; rust-cluster replaces them, so the channel the child reads is the real one.
    if (!impl.reference) Object.assign(env, { NODE_CHANNEL_FD: '99', NODE_CHANNEL_SERIALIZATION_MODE: 'bogus' });
    const r = await report(t, [], { env });
    const expected = { ONLY: 'this', WEIRD: env.WEIRD, EMPTY: '' };
    if (process.env.NODE_V8_COVERAGE !== undefined) expected.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
    assert.deepEqual(r.env, expected);
  });
});
