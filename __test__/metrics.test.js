'use strict';
// The supervisor's figures (stats(), the 'stats' event) and its Prometheus endpoint, run in this
// process (the test is the primary): each figure moves when what it counts happens, and the
// endpoint, read by a Prometheus text-format parser from npm, says what stats() says.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const parsePrometheus = require('parse-prometheus-text-format');
const { supervise } = require('../supervisor');
const { exposition } = require('../lib/prometheus');
const { many, once, until } = require('./helpers/wait');
const { startFixture } = require('./helpers/fixture');
const { install } = require('./helpers/install');
const { FIXTURES, freePort, get } = require('./helpers/supervisor');

const SERVER = path.join(FIXTURES, 'server.js');
const MB = 2 ** 20;

// A ready supervisor of SERVER on a free port, destroyed after the test.
async function start(t, options = {}) {
  const port = await freePort();
  const supervisor = supervise({ exec: SERVER, workers: 2, ...options, env: { PORT: String(port) } });
  t.after(() => supervisor.destroy());
  await once(supervisor, 'ready', { timeout: 20_000 });
  return { supervisor, port };
}

const rowOf = (supervisor, pid) => supervisor.stats().workers.find((w) => w.pid === pid);

function request(port, urlPath = '/') {
  return get(port, urlPath).then((res) => ({ ...res, pid: Number(res.headers['x-worker']) }));
}

test('stats(): 100 MB allocated by a worker shows in its RSS, and in no other', async (t) => {
  const { supervisor, port } = await start(t);
  const before = supervisor.stats().workers;
  const { pid } = await request(port, '/grow?mb=100');
  const after = supervisor.stats().workers;
  for (const row of after) {
    const grown = row.rss - before.find((w) => w.pid === row.pid).rss;
    if (row.pid === pid) assert.ok(grown >= 95 * MB, `the allocating worker grew ${(grown / MB).toFixed(1)} MB`);
    else assert.ok(grown < 20 * MB, `the other worker grew ${(grown / MB).toFixed(1)} MB`);
  }
});

test("stats(): a busy worker's CPU % rises, then falls back; its CPU time grows; the idle one stays idle", { timeout: 30_000 }, async (t) => {
  const { supervisor, port } = await start(t);
  const pids = supervisor.stats().workers.map((w) => w.pid);
  const idle = (w) => w.cpuPercent < 15;
  await until(() => supervisor.stats().workers.every(idle), { what: 'both workers idle after their start', interval: 50 });
  const before = supervisor.stats().workers;
  const spin = request(port, '/spin?ms=2500');
  const busy = await until(() => supervisor.stats().workers.find((w) => w.cpuPercent > 60), { what: 'a busy worker', interval: 50 });
  const other = rowOf(supervisor, pids.find((pid) => pid !== busy.pid));
  assert.ok(idle(other), `the other worker used ${other.cpuPercent}% meanwhile`);
  assert.equal((await spin).pid, busy.pid, 'the busy one is the one that spun');
  const spent = rowOf(supervisor, busy.pid).cpuSeconds - before.find((w) => w.pid === busy.pid).cpuSeconds;
  assert.ok(spent >= 1.5 && spent < 4, `CPU time grew ${spent} s over a 2.5 s spin`);
  await until(() => idle(rowOf(supervisor, busy.pid)), { what: 'the worker idle again', interval: 50 });
});

test("stats(): messages and bytes each way on a worker's channel, exactly", async (t) => {
  const { supervisor } = await start(t, { workers: 1 });
  const [worker] = Object.values(require('..').workers).filter((w) => w.process.pid === supervisor.stats().workers[0].pid);
  const before = supervisor.stats().workers[0];
  // Ten messages out, of which the five { echo } are answered, each with { echoed }.
  const messages = Array.from({ length: 10 }, (_, i) => (i % 2 ? { echo: 'é'.repeat(i) } : { quiet: i }));
  const answers = messages.filter((m) => m.echo !== undefined).map((m) => ({ echoed: m.echo }));
  const answered = many(worker, 'message', answers.length);
  for (const message of messages) worker.send(message);
  assert.deepEqual((await answered).map(([m]) => m), answers);
  const after = supervisor.stats().workers[0];
  const bytes = (list) => list.reduce((sum, m) => sum + Buffer.byteLength(`${JSON.stringify(m)}\n`), 0);
  const moved = (key) => after[key] - before[key];
  assert.deepEqual(
    { messagesOut: moved('messagesOut'), bytesOut: moved('bytesOut'), messagesIn: moved('messagesIn'), bytesIn: moved('bytesIn') },
    { messagesOut: 10, bytesOut: bytes(messages), messagesIn: 5, bytesIn: bytes(answers) },
  );
});

test('stats(): the connections handed to each worker are the connections it served; the server counts them all', async (t) => {
  const { supervisor, port } = await start(t);
  const served = {};
  const connections = 30;
  for (let i = 0; i < connections; i++) {
    const { pid } = await request(port);
    served[pid] = (served[pid] ?? 0) + 1;
  }
  // A worker answers its hand-off just after it has the connection: the last may still be open.
  const stats = await until(() => {
    const s = supervisor.stats();
    return s.workers.every((w) => w.pending === 0) && s;
  }, { what: 'every hand-off answered' });
  assert.deepEqual(Object.fromEntries(stats.workers.map((w) => [w.pid, w.handed])), served);
  assert.equal(Object.keys(served).length, 2, 'both workers served');
  const [server] = stats.servers.filter((s) => s.key.startsWith(`127.0.0.1:${port}:`));
  assert.deepEqual(server, { key: server.key, accepted: connections, queued: 0 });
});

test("stats() has a row for every live worker, draining ones too, and the slots without one; 'stats' comes every statsInterval ms", async (t) => {
  const { supervisor } = await start(t, { statsInterval: 100, drainTimeout: 60_000 });
  const events = await many(supervisor, 'stats', 3);
  for (let i = 1; i < events.length; i++) assert.ok(events[i][0].at - events[i - 1][0].at >= 95, 'no sooner than the interval');
  assert.deepEqual(events[0][0].workers.map((w) => [w.slot, w.state]), [[0, 'ready'], [1, 'ready']]);
  // Scaled down, the second worker drains until it has exited: a row 'draining' meanwhile.
  const { workers } = supervisor.stats();
  await supervisor.scale(1);
  const after = supervisor.stats();
  assert.deepEqual(after.workers.map((w) => [w.slot, w.id, w.state]), [[0, workers[0].id, 'ready'], [1, workers[1].id, 'draining']]);
  assert.deepEqual(after.vacant, []);
  await once(supervisor, 'exit');
  assert.deepEqual(supervisor.stats().workers.map((w) => w.id), [workers[0].id]);
});

test('a crash loop leaves vacant slots, shown as stopped', async (t) => {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-metrics-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const env = { PORT: String(port), COUNT_FILE: path.join(dir, 'count'), PLAN: '0' };
  const supervisor = supervise({ exec: path.join(FIXTURES, 'crash.js'), workers: 1, maxRestarts: 0, env });
  t.after(() => supervisor.destroy());
  await once(supervisor, 'crashLoop');
  const stats = supervisor.stats();
  assert.deepEqual([stats.crashLoop, stats.workers, stats.vacant], [true, [], [{ slot: 0, state: 'stopped', restarts: 0 }]]);
});

// GET /metrics: { headers, families: Map(name -> parsed family) }, every family named once.
async function scrape(port) {
  const res = await get(port, '/metrics');
  assert.equal(res.status, 200);
  assert.ok(res.body.endsWith('\n'));
  const families = new Map();
  for (const family of parsePrometheus(res.body)) {
    assert.ok(!families.has(family.name), `${family.name} is one family`);
    families.set(family.name, family);
  }
  return { headers: res.headers, families };
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const labelsOf = (w) => ({ worker: String(w.id), pid: String(w.pid) });

test('GET /metrics, parsed by a Prometheus text-format parser, says metric by metric what stats() says', async (t) => {
  const metricsPort = await freePort();
  const { supervisor, port } = await start(t, { metrics: { port: metricsPort } });
  for (let i = 0; i < 10; i++) await request(port);
  await until(() => supervisor.stats().workers.every((w) => w.pending === 0), { what: 'every hand-off answered' });
  const { headers, families } = await scrape(metricsPort);
  const stats = supervisor.stats();
  assert.equal(headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');

  // Every family: a valid name, documented, typed; counters and only they end in _total.
  for (const family of families.values()) {
    assert.match(family.name, NAME);
    assert.ok(family.help.length > 10, `${family.name} has a HELP line`);
    assert.equal(family.type, family.name.endsWith('_total') ? 'COUNTER' : 'GAUGE', family.name);
    for (const sample of family.metrics) for (const label of Object.keys(sample.labels ?? {})) assert.match(label, LABEL);
  }

  const expected = {
    rust_cluster_info: [[{ implementation: 'rust' }, 1]],
    rust_cluster_ready: [[undefined, 1]],
    rust_cluster_crash_loop: [[undefined, 0]],
    rust_cluster_reloads_total: [[undefined, 0]],
    rust_cluster_workers: ['starting', 'ready', 'draining', 'waiting', 'stopped'].map((state) => [{ state }, state === 'ready' ? 2 : 0]),
    rust_cluster_slot_restarts_total: [[{ slot: '0' }, 0], [{ slot: '1' }, 0]],
    rust_cluster_worker_ipc_received_messages_total: stats.workers.map((w) => [labelsOf(w), w.messagesIn]),
    rust_cluster_worker_ipc_received_bytes_total: stats.workers.map((w) => [labelsOf(w), w.bytesIn]),
    rust_cluster_worker_ipc_sent_messages_total: stats.workers.map((w) => [labelsOf(w), w.messagesOut]),
    rust_cluster_worker_ipc_sent_bytes_total: stats.workers.map((w) => [labelsOf(w), w.bytesOut]),
    rust_cluster_worker_connections_handed_total: stats.workers.map((w) => [labelsOf(w), w.handed]),
    rust_cluster_worker_connections_pending: stats.workers.map((w) => [labelsOf(w), 0]),
    rust_cluster_server_connections_accepted_total: stats.servers.map((s) => [{ server: s.key }, s.accepted]),
    rust_cluster_server_connections_queued: stats.servers.map((s) => [{ server: s.key }, 0]),
  };
  // Figures that move by themselves between the scrape and stats(): near it.
  const near = {
    rust_cluster_worker_start_time_seconds: [(w) => (stats.at / 1000 - w.uptime), 0.01],
    rust_cluster_worker_resident_memory_bytes: [(w) => w.rss, 4 * MB],
    rust_cluster_worker_cpu_seconds_total: [(w) => w.cpuSeconds, 0.2],
    rust_cluster_worker_cpu_usage_ratio: [(w) => w.cpuPercent / 100, 0.5],
  };
  assert.deepEqual([...families.keys()].sort(), [...Object.keys(expected), ...Object.keys(near)].sort());
  for (const [name, samples] of Object.entries(expected)) {
    const got = families.get(name).metrics.map((m) => [m.labels, Number(m.value)]);
    assert.deepEqual(got, samples, name);
  }
  for (const [name, [figure, tolerance]] of Object.entries(near)) {
    const got = families.get(name).metrics;
    assert.deepEqual(got.map((m) => m.labels), stats.workers.map(labelsOf), name);
    got.forEach((m, i) => {
      const want = figure(stats.workers[i]);
      assert.ok(Math.abs(Number(m.value) - want) <= tolerance, `${name}: ${m.value}, stats() says ${want}`);
    });
  }
  assert.ok(stats.servers.some((s) => s.accepted === 10), 'the server counted the connections');
});

test('/metrics listens on 127.0.0.1 unless told otherwise; other paths are 404, other methods 405', async (t) => {
  const metricsPort = await freePort();
  await start(t, { workers: 1, metrics: { port: metricsPort } });
  assert.equal((await get(metricsPort, '/metrics')).status, 200);
  assert.equal((await get(metricsPort, '/')).status, 404);
  const post = await new Promise((resolve, reject) => {
    http.request({ host: '127.0.0.1', port: metricsPort, path: '/metrics', method: 'POST', agent: false }, (res) => resolve(res.resume())).on('error', reject).end();
  });
  assert.equal(post.statusCode, 405);
  // 127.0.0.2 is this machine too: only a server bound to every interface answers there.
  const elsewhere = await new Promise((resolve) => {
    const socket = net.connect(metricsPort, '127.0.0.2', () => resolve(socket.destroy() && 'connected')).on('error', (err) => resolve(err.code));
  });
  assert.equal(elsewhere, 'ECONNREFUSED');
});

test('the exposition escapes label values and HELP text as the format says', () => {
  const value = 'C:\\dir\\"quoted"\nnext line';
  const text = exposition([
    { name: 'x_total', type: 'counter', help: 'back\\slash\nnewline', samples: [{ labels: { path: value, n: 3 }, value: 1.5 }] },
    { name: 'y', type: 'gauge', help: 'no samples', samples: [] },
  ]);
  assert.equal(text, '# HELP x_total back\\\\slash\\nnewline\n# TYPE x_total counter\nx_total{path="C:\\\\dir\\\\\\"quoted\\"\\nnext line",n="3"} 1.5\n');
  const [family] = parsePrometheus(text);
  assert.deepEqual(family.metrics, [{ labels: { path: value, n: '3' }, value: '1.5' }]);
});

test("options are checked: statsInterval, metrics, control", () => {
  assert.throws(() => supervise({ exec: SERVER, statsInterval: 0 }), { code: 'ERR_OUT_OF_RANGE', message: /options\.statsInterval/ });
  assert.throws(() => supervise({ exec: SERVER, metrics: { port: 70000 } }), { code: 'ERR_SOCKET_BAD_PORT', message: /options\.metrics\.port/ });
  assert.throws(() => supervise({ exec: SERVER, metrics: { port: 9100, host: 1 } }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.metrics\.host/ });
  assert.throws(() => supervise({ exec: SERVER, control: '' }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.control/ });
});

test("without a native core: RSS and CPU from /proc, no IPC or connection figures, and the metrics and status say so", { timeout: 60_000 }, async (t) => {
  const project = install(t, { core: false });
  const fx = startFixture(t, path.join(FIXTURES, 'fallback-stats.js'), { cwd: project, env: { PORT: String(await freePort()), METRICS_PORT: String(await freePort()) } });
  const { stats } = await fx.waitFor('stats', { timeout: 30_000 });
  assert.equal(stats.implementation, 'node');
  assert.equal(stats.servers, null);
  assert.equal(stats.workers.length, 2);
  for (const w of stats.workers) {
    assert.ok(w.rss > 10 * MB && w.cpuSeconds > 0 && typeof w.cpuPercent === 'number', JSON.stringify(w));
    for (const key of ['messagesIn', 'bytesIn', 'messagesOut', 'bytesOut', 'handed', 'pending']) assert.equal(w[key], null, key);
  }
  const { metrics } = await fx.waitFor('metrics');
  const names = parsePrometheus(metrics).map((f) => f.name);
  assert.ok(names.includes('rust_cluster_worker_resident_memory_bytes') && names.includes('rust_cluster_worker_cpu_seconds_total'));
  assert.deepEqual(names.filter((n) => /ipc|connections/.test(n)), []);
  assert.match(metrics, /^rust_cluster_info\{implementation="node"\} 1$/m);
  const { status } = await fx.waitFor('status');
  assert.match(status, /No native core \(Node's own cluster\): message, byte and connection figures are not available/);
  assert.deepEqual(await fx.exited, { code: 0, signal: null }, fx.stderr);
});
