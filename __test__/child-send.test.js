'use strict';
// A child that loads rust-cluster batches its own process.send() (lib/child-send.js): a tick's
// messages leave in one write, in order with the handles and ACKs that Node still writes itself.
// The child is the same in both modes; with RC_REFERENCE=node the parent is Node's own, which
// shows that Node reads the batched writes as it reads its own.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const impl = require('./helpers/impl');
const { once, many } = require('./helpers/wait');

const { fork } = impl.child_process;
const CHILD = path.join(__dirname, 'fixtures', 'child-send', 'child.js');
const WORKER = path.join(__dirname, 'fixtures', 'child-send', 'worker.js');

// Forks the fixture and collects its messages; `next(op)` takes the first report of that op.
async function start(t, { env = {}, ...options } = {}) {
  const child = fork(CHILD, [], { execArgv: [], env: { ...process.env, ...env }, ...options });
  const exited = once(child, 'exit', { timeout: 30_000 });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  const received = [];
  child.on('message', (message, handle) => received.push([message, handle]));
  const next = async (op) => {
    for (;;) {
      const at = received.findIndex(([m]) => m && m.op === op);
      if (at !== -1) return received.splice(at, 1)[0][0];
      await once(child, 'message', { timeout: 20_000 });
    }
  };
  await next('ready');
  return { child, received, next, exited };
}

// The first `n` messages with an `i`, as they arrived.
function numbered(received) {
  return received.filter(([m]) => m && m.i !== undefined).map(([m]) => m.i);
}

async function burst(t, n, size, then, options) {
  const { child, received, exited } = await start(t, options);
  const all = many(child, 'message', n, { timeout: 30_000 });
  child.send({ op: 'burst', n, size, then });
  await all;
  assert.deepEqual(numbered(received), Array.from({ length: n }, (_, i) => i), 'every message, in order');
  return { child, exited };
}

test('one tick of sends leaves in a few writes, not one write each', { timeout: 30_000 }, async (t) => {
  const batched = await start(t);
  batched.child.send({ op: 'syscalls', n: 2000 });
  const { writes } = await batched.next('syscalls');
  const stock = await start(t, { env: { STOCK: '1' } });
  stock.child.send({ op: 'syscalls', n: 2000 });
  const { writes: stockWrites } = await stock.next('syscalls');
  assert.ok(writes <= 20, `batched child: ${writes} write syscalls for 2,000 sends`);
  assert.ok(stockWrites >= 200, `the measurement sees Node's own writes: ${stockWrites}`);
});

test('RUST_CLUSTER_CHILD_BATCHING=0 leaves process.send as Node made it', { timeout: 30_000 }, async (t) => {
  const { child, next } = await start(t, { env: { RUST_CLUSTER_CHILD_BATCHING: '0' } });
  child.send({ op: 'syscalls', n: 2000 });
  const { writes } = await next('syscalls');
  assert.ok(writes >= 200, `${writes} write syscalls`);
});

test('20,000 messages in one tick arrive complete and in order', { timeout: 60_000 }, async (t) => {
  await burst(t, 20_000, 0);
});

test('the same in advanced serialization', { timeout: 60_000 }, async (t) => {
  await burst(t, 5_000, 10, undefined, { serialization: 'advanced' });
});

test('a burst then process.exit() in the same tick loses nothing', { timeout: 60_000 }, async (t) => {
  const { exited } = await burst(t, 5_000, 0, 'exit');
  assert.equal((await exited)[0], 0);
});

test('a burst larger than the socket buffer, then disconnect(): all delivered before the disconnect', {
  timeout: 60_000,
}, async (t) => {
  const { child, received, exited } = await start(t);
  const n = 4_000;
  const disconnected = once(child, 'disconnect', { timeout: 30_000 });
  child.send({ op: 'burst', n, size: 1024, then: 'disconnect' });
  await disconnected;
  assert.deepEqual(numbered(received), Array.from({ length: n }, (_, i) => i));
  // Nothing else keeps the child alive once its channel is gone.
  // start() listens for 'exit' from the fork on: the child may exit before 'disconnect' resolves.
  assert.equal((await exited)[0], 0);
});

test('send callbacks are called with null, in order', { timeout: 30_000 }, async (t) => {
  const { child, next } = await start(t);
  child.send({ op: 'callbacks', n: 100 });
  const { order } = await next('callbacks');
  assert.deepEqual(order, Array.from({ length: 100 }, (_, i) => i));
});

test('handles the child sends keep their place among its batched messages', { timeout: 30_000 }, async (t) => {
  const { child, received, next } = await start(t);
  child.send({ op: 'mixed', n: 50 });
  await next('mixed-done');
  const arrived = received.filter(([m]) => m && m.i !== undefined);
  assert.deepEqual(arrived.map(([m]) => m.i), Array.from({ length: 50 }, (_, i) => i));
  for (const [m, handle] of arrived) {
    assert.equal(handle instanceof net.Server, Boolean(m.server), `message ${m.i}`);
    handle?.close();
  }
});

test('a handle sent while the batch writer is backed up waits, and so does everything after it', {
  timeout: 60_000,
}, async (t) => {
  const { child, received } = await start(t);
  const [before, after] = [3_000, 20];
  const all = many(child, 'message', before + 1 + after, { timeout: 30_000 });
  child.send({ op: 'backlog-handle', before, after, size: 1024 });
  await all;
  assert.deepEqual(numbered(received), Array.from({ length: before + 1 + after }, (_, i) => i));
  const [message, handle] = received.find(([m]) => m.server);
  assert.equal(message.i, before);
  assert.ok(handle instanceof net.Server);
  handle.close();
});

test('handles sent to the child are ACKed through the batched path', { timeout: 30_000 }, async (t) => {
  const { child, next } = await start(t);
  const server = net.createServer((s) => s.on('error', () => {})).listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const n = 50;
  child.send({ op: 'sockets', n });
  const clients = await Promise.all(Array.from({ length: n }, async () => {
    const client = net.connect(server.address().port, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    return client;
  }));
  for (const client of clients) child.send('socket', client);
  assert.equal((await next('sockets')).got, n);
});

test('a cluster worker (which loads rust-cluster) batches its messages to the primary', { timeout: 30_000 }, async (t) => {
  const cluster = impl.cluster;
  cluster.setupPrimary({ exec: WORKER, execArgv: [] });
  const worker = cluster.fork();
  t.after(() => worker.process.kill('SIGKILL'));
  const n = 10_000;
  const messages = many(worker, 'message', n + 1, { timeout: 20_000 });
  const got = (await messages).map(([m]) => m);
  assert.deepEqual(got.slice(0, n).map((m) => m.i), Array.from({ length: n }, (_, i) => i));
  assert.ok(got[n].writes <= 20, `${got[n].writes} write syscalls for ${n} sends`);
  worker.disconnect();
  await once(worker, 'exit');
});
