'use strict';
// Handle (fd) passing over the IPC channel: subprocess.send(message, sendHandle[, options]) and
// the child's process.send(), in both directions, as documented for Node's child_process.fork.
// Run against Node's own implementation with RC_REFERENCE=node.
const { test, before } = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const net = require('node:net');
const dgram = require('node:dgram');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const nodeChildProcess = require('node:child_process');
const impl = require('./helpers/impl');
const { once, many, until } = require('./helpers/wait');

const { fork } = impl.child_process;
const FIXTURE = path.join(__dirname, 'fixtures', 'handles', 'child.js');
const EXAMPLES = path.join(__dirname, '..', 'examples');

function fdCount() {
  return fs.readdirSync('/proc/self/fd').length;
}

// Fds are released by asynchronous closes, so poll (with a deadline) before asserting.
async function assertFdsAtMost(limit, what) {
  await until(() => fdCount() <= limit, { timeout: 5_000 }).catch(() => {});
  const now = fdCount();
  assert.ok(now <= limit, `${what}: ${now} fds open, expected at most ${limit}`);
}

function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// Forks the fixture child and waits for its 'ready'. Every message it sends lands in an inbox
// (so nothing is missed between awaits); `expect(op, id)` takes the first matching one out.
// The child is killed, and its end awaited, after the test. `ended`: 'close', or 'exit' plus
// 'disconnect' (Node emits no 'close' when the parent disconnected the channel itself).
async function forkChild(t, options = {}) {
  const child = fork(FIXTURE, [], options);
  const event = (name) => new Promise((resolve) => child.once(name, resolve));
  const ended = Promise.race([event('close'), Promise.all([event('exit'), event('disconnect')])]);
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await withDeadline(ended, 5_000, 'the child to end');
  });
  const inbox = [];
  const arrived = new EventEmitter();
  child.on('message', (message, handle) => {
    inbox.push([message, handle]);
    arrived.emit('message');
  });
  const expect = async (op, id, timeout = 10_000) => {
    const deadline = Date.now() + timeout;
    for (;;) {
      const i = inbox.findIndex(([m]) => m && m.op === op && (id === undefined || m.id === id));
      if (i >= 0) return inbox.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for message '${op}' from the child`);
      await once(arrived, 'message', { timeout: left }).catch(() => {});
    }
  };
  await expect('ready');
  return { child, inbox, expect, ended };
}

// send() with its callback as a promise.
function send(child, message, handle, options = {}) {
  return new Promise((resolve, reject) => {
    child.send(message, handle, options, (err) => (err ? reject(err) : resolve()));
  });
}

// Accumulates what a socket reads; `await r.until('x')` resolves once 'x' has been read.
function reader(socket) {
  let text = '';
  socket.setEncoding('utf8');
  socket.on('data', (d) => { text += d; });
  return {
    get text() { return text; },
    async until(expected) {
      while (!text.includes(expected)) {
        await once(socket, 'data').catch(() => {
          throw new Error(`timed out: expected to read ${JSON.stringify(expected)}, read ${JSON.stringify(text)}`);
        });
      }
    },
  };
}

// One whole response from a server that writes and ends the connection.
function fetchText(port, options = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', ...options });
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d) => { text += d; });
    s.on('end', () => resolve(text));
    s.on('error', reject);
  });
}

let unixSeq = 0;
// A server in this process that plays the remote peer of the sockets being passed around
// (TCP on 127.0.0.1, or a unix-domain socket). Everything is closed after the test.
async function peerServer(t, kind = 'tcp') {
  const server = net.createServer();
  const sockets = [];
  server.on('connection', (s) => {
    s.on('error', () => {});
    sockets.push(s);
  });
  const unixPath = path.join(os.tmpdir(), `rc-handles-${process.pid}-${++unixSeq}.sock`);
  if (kind === 'unix') server.listen(unixPath);
  else server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const target = kind === 'unix' ? { path: unixPath } : { port: server.address().port };
  return {
    server,
    sockets,
    target,
    // The next connection the server accepts (call before it is made).
    accepted: () => once(server, 'connection').then(([s]) => s),
    // A connected (client, peer) pair; client is the end that gets passed around.
    async pair() {
      const accepted = this.accepted();
      const client = target.path ? net.connect(target.path) : net.connect(target.port, '127.0.0.1');
      client.on('error', () => {});
      sockets.push(client);
      await once(client, 'connect');
      return { client, peer: await accepted };
    },
  };
}

// A bound udp4 socket that is closed after the test.
async function udpSocket(t) {
  const sock = dgram.createSocket('udp4');
  sock.bind(0, '127.0.0.1');
  await once(sock, 'listening');
  t.after(() => { try { sock.close(); } catch {} });
  return sock;
}

let baselineFds;
before(async () => {
  // Warm-up: the first fork and the first handles create lasting internal fds (e.g. libuv's
  // signal pipe for SIGCHLD), so the file-wide baseline is taken after one full round trip.
  const hooks = [];
  const t = { after: (fn) => hooks.push(fn) };
  const { child, expect } = await forkChild(t);
  const peer = await peerServer(t);
  const { client } = await peer.pair();
  await send(child, { op: 'socket', id: 'warm' }, client);
  await expect('got', 'warm');
  const accepted = peer.accepted();
  child.send({ op: 'make-socket', id: 'warm2', ...peer.target });
  const [, handle] = await expect('socket', 'warm2');
  handle.destroy();
  await accepted;
  for (const fn of hooks) await fn();
  baselineFds = fdCount();
});

// ---------------------------------------------------------------------------------------------
// Each handle type, in each direction.

test('parent → child: net.Server arrives listening and the child accepts on it', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await send(child, { op: 'serve', id: 1 }, server);
  // Our copy is closed so the child is the only acceptor (the child's copy stays listening).
  await new Promise((resolve) => server.close(resolve));
  const [got] = await expect('got', 1);
  assert.equal(got.cls, 'net.Server');
  assert.equal(got.address.port, port);
  assert.equal(await fetchText(port), 'child:1');
});

test('child → parent: net.Server arrives listening and the parent accepts on it', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  child.send({ op: 'make-server', id: 2 });
  const [m, server] = await expect('server', 2);
  t.after(() => server.close());
  assert.ok(server instanceof net.Server, 'handle is a net.Server');
  assert.equal(server.listening, true);
  assert.equal(server.address().port, m.port);
  server.on('connection', (s) => s.end('parent:2'));
  await expect('closed', 2); // the child's copy is gone: only we can answer now
  assert.equal(await fetchText(m.port), 'parent:2');
});

for (const kind of ['tcp', 'unix']) {
  test(`parent → child: net.Socket (${kind}) — the child reads and writes on it`, { timeout: 20_000 }, async (t) => {
    const { child, expect } = await forkChild(t);
    const { client, peer } = await (await peerServer(t, kind)).pair();
    const fromChild = reader(peer);
    await send(child, { op: 'socket', id: 3 }, client);
    const [got] = await expect('got', 3);
    assert.equal(got.cls, 'net.Socket');
    await fromChild.until('child:3;');
    peer.write('to-child');
    const [data] = await expect('data', 3);
    assert.equal(data.data, 'to-child');
  });

  test(`child → parent: net.Socket (${kind}) — the parent reads and writes on it`, { timeout: 20_000 }, async (t) => {
    const { child, expect } = await forkChild(t);
    const peerSrv = await peerServer(t, kind);
    const accepted = peerSrv.accepted();
    child.send({ op: 'make-socket', id: 4, ...peerSrv.target });
    const [, socket] = await expect('socket', 4);
    t.after(() => socket.destroy());
    assert.ok(socket instanceof net.Socket, 'handle is a net.Socket');
    const peer = await accepted;
    const fromParent = reader(peer);
    const fromPeer = reader(socket);
    socket.write('parent:4;');
    await fromParent.until('parent:4;');
    await expect('acked', 4); // until then the child's copy may still swallow what the peer sends
    peer.write('to-parent');
    await fromPeer.until('to-parent');
  });
}

test('parent → child: dgram.Socket (udp4) — the child receives a datagram on it', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const sock = await udpSocket(t);
  const { port } = sock.address();
  await send(child, { op: 'udp', id: 5 }, sock);
  sock.close(); // only the child's copy may receive now
  const [got] = await expect('got', 5);
  assert.deepEqual([got.cls, got.type, got.port], ['dgram.Socket', 'udp4', port]);
  const sender = await udpSocket(t);
  sender.send('ping:5', port, '127.0.0.1');
  const [data] = await expect('data', 5);
  assert.equal(data.data, 'ping:5');
});

test('child → parent: dgram.Socket (udp4) — the parent receives a datagram on it', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  child.send({ op: 'make-udp', id: 6 });
  const [m, sock] = await expect('udp', 6);
  t.after(() => { try { sock.close(); } catch {} });
  assert.ok(sock instanceof dgram.Socket, 'handle is a dgram.Socket');
  assert.equal(sock.type, 'udp4');
  assert.equal(sock.address().port, m.port);
  await expect('closed', 6); // the child's copy is closed: the datagram can only reach us
  const received = once(sock, 'message');
  const sender = await udpSocket(t);
  sender.send('ping:6', m.port, '127.0.0.1');
  const [data] = await received;
  assert.equal(String(data), 'ping:6');
});

// ---------------------------------------------------------------------------------------------
// keepOpen

test('keepOpen: parent keeps using the socket it sent; it outlives the child\'s copy', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const { client, peer } = await (await peerServer(t)).pair();
  const atPeer = reader(peer);
  const atClient = reader(client);
  await send(child, { op: 'socket', id: 7 }, client, { keepOpen: true });
  await expect('got', 7);
  client.write('parent:7;');
  await atPeer.until('child:7;'); // both ends write to the same peer
  await atPeer.until('parent:7;');
  // The child closes its fd; ours keeps the connection alive.
  child.send({ op: 'close', id: 7 });
  await expect('closed', 7);
  client.write('still-open;');
  await atPeer.until('still-open;');
  peer.write('to-parent');
  await atClient.until('to-parent');
  assert.equal(client.destroyed, false);
});

test('keepOpen: child keeps writing on the socket it sent, the parent writes too', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const peerSrv = await peerServer(t);
  const accepted = peerSrv.accepted();
  child.send({ op: 'make-socket', id: 8, keepOpen: true, ...peerSrv.target });
  const [, socket] = await expect('socket', 8);
  t.after(() => socket.destroy());
  const atPeer = reader(await accepted);
  socket.write('parent:8;');
  await atPeer.until('child-after-send:8;');
  await atPeer.until('parent:8;');
});

test('no keepOpen: the parent\'s socket is detached and its fd closed after the handover', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const { client, peer } = await (await peerServer(t)).pair();
  const clientClosed = new Promise((resolve) => client.once('close', resolve));
  const atPeer = reader(peer);
  await send(child, { op: 'socket', id: 9 }, client);
  await expect('got', 9);
  await atPeer.until('child:9;');
  // What the peer writes now goes to the child only.
  peer.write('to-child');
  const [data] = await expect('data', 9);
  assert.equal(data.data, 'to-child');
  // Writing on the sent socket fails, and the socket ends up destroyed. (Node only detaches it:
  // the write fails with ERR_SOCKET_CLOSED, which destroys it; destroying it at the handover
  // is just as good.)
  const writeErr = await new Promise((resolve) => client.write('late', resolve));
  assert.ok(writeErr instanceof Error, 'write after the handover fails');
  await withDeadline(clientClosed, 5_000, "the sent socket's 'close'");
  assert.equal(client.destroyed, true);
  // Once the child closes its copy the peer sees EOF: ours was closed too.
  const peerEnded = once(peer, 'end');
  child.send({ op: 'close', id: 9 });
  await peerEnded;
});

// Node's parent asks the child (NODE_SOCKET_GET_COUNT / NODE_SOCKET_NOTIFY_CLOSE) about sockets it
// sent from a server: the server still counts them, and closes only once the child has closed them.
test("sockets sent from a server stay counted by it: getConnections() asks the child, close() waits for the child's copies", { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const sent = [];
  server.on('connection', (socket) => sent.push(send(child, { op: 'socket', id: 20 + sent.length }, socket)));
  const clients = [0, 1].map(() => net.connect(server.address().port, '127.0.0.1'));
  t.after(() => clients.forEach((c) => c.destroy()));
  await expect('got', 20);
  await expect('got', 21);
  await Promise.all(sent);
  const count = () => new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  assert.equal(await count(), 2, "the child's two sockets");

  child.send({ op: 'close', id: 20 });
  await expect('closed', 20);
  // The child counts a socket as closed on its 'close' event, just after it reports.
  await until(async () => (await count()) === 1, { what: 'the count to drop to 1' });

  let closed = false;
  server.close(() => { closed = true; });
  // A round trip to the child after the close() asked it: the server waits for socket 21.
  await count();
  assert.equal(closed, false, "'close' waits for the child's last socket");
  child.send({ op: 'close', id: 21 });
  await until(() => closed, { what: "the server's 'close'" });
});

test('no keepOpen: the child\'s copy is closed after the parent acknowledges the handle', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const peerSrv = await peerServer(t);
  const accepted = peerSrv.accepted();
  child.send({ op: 'make-socket', id: 10, ...peerSrv.target });
  const [, socket] = await expect('socket', 10);
  const peer = await accepted;
  await expect('sent', 10);
  // The child closes its fd on our ACK; once we close ours the peer sees EOF.
  const peerEnded = once(peer, 'end');
  socket.destroy();
  await peerEnded;
});

test('disconnect() right after sending handles: the queued handles are still delivered', { timeout: 20_000 }, async (t) => {
  const { child } = await forkChild(t);
  const peerSrv = await peerServer(t);
  const pairs = [];
  for (let i = 0; i < 5; i++) pairs.push(await peerSrv.pair());
  const greeted = pairs.map(({ peer }, i) => reader(peer).until(`child:q${i};`));
  for (const [i, { client }] of pairs.entries()) child.send({ op: 'socket', id: `q${i}` }, client);
  // Handles 2..5 wait for ACKs; the disconnect must wait for them rather than drop them.
  const disconnected = once(child, 'disconnect');
  child.disconnect();
  assert.equal(child.connected, false);
  await Promise.all(greeted);
  await disconnected;
});

// ---------------------------------------------------------------------------------------------
// Ordering

const TOTAL = 250; // 50 of them (every 5th) carry a socket
const EVERY = 5;
const expectedSequence = Array.from({ length: TOTAL }, (_, n) => [n, n % EVERY === 0 ? 'net.Socket' : 'undefined']);

for (const serialization of ['json', 'advanced']) {
  test(`ordering (${serialization}): parent → child burst of plain and handle messages arrives in order`, { timeout: 30_000 }, async (t) => {
    const { child, expect } = await forkChild(t, { serialization });
    const peerSrv = await peerServer(t);
    const clients = [];
    for (let n = 0; n < TOTAL; n += EVERY) clients.push((await peerSrv.pair()).client);
    // Sent back to back: messages after a handle must wait for it, not overtake it.
    for (let n = 0; n < TOTAL; n++) {
      if (n % EVERY === 0) child.send({ op: 'seq', n }, clients[n / EVERY]);
      else child.send({ op: 'seq', n });
    }
    child.send({ op: 'report' });
    const [report] = await expect('report');
    assert.deepEqual(report.sequence, expectedSequence);
  });

  test(`ordering (${serialization}): child → parent burst of plain and handle messages arrives in order`, { timeout: 30_000 }, async (t) => {
    const { child, inbox, expect } = await forkChild(t, { serialization });
    child.send({ op: 'burst', total: TOTAL, every: EVERY });
    await expect('burst-done', undefined, 20_000);
    const seq = inbox.filter(([m]) => m.op === 'seq');
    for (const [, h] of seq) if (h) h.destroy();
    const got = seq.map(([m, h]) => [m.n, h instanceof net.Socket ? 'net.Socket' : String(h)]);
    assert.deepEqual(got, expectedSequence);
  });
}

test('1,000 sockets passed in a row arrive in order and leak no fd', { timeout: 60_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const peerSrv = await peerServer(t);
  // A passed socket is fully closed (the peer sees 'close') only once the child has closed
  // its copy and we have closed ours.
  const peerClosed = new EventEmitter();
  peerSrv.server.on('connection', (s) => s.on('close', () => peerClosed.emit('close')));
  let next = 0;
  async function pass(count) {
    const BATCH = 50;
    for (let done = 0; done < count; done += BATCH) {
      const batch = Math.min(BATCH, count - done);
      const allClosed = many(peerClosed, 'close', batch);
      const clients = await Promise.all(Array.from({ length: batch }, async () => {
        const client = net.connect(peerSrv.target.port, '127.0.0.1');
        await once(client, 'connect');
        return client;
      }));
      for (const client of clients) child.send({ op: 'seq', n: next++ }, client);
      await allClosed;
    }
  }
  await pass(50); // warm-up
  peerSrv.sockets.length = 0; // all closed; don't keep 1,000 dead sockets referenced
  const fdsBefore = fdCount();
  await pass(1000);
  peerSrv.sockets.length = 0;
  // A per-handle leak would show as ~1,000 extra fds; the small slack absorbs incidental ones.
  await assertFdsAtMost(fdsBefore + 3, 'after passing 1,000 sockets');
  child.send({ op: 'report' });
  const [report] = await expect('report');
  assert.deepEqual(report.sequence, Array.from({ length: next }, (_, n) => [n, 'net.Socket']));
});

test('small handles are pipelined: later sends go out before the child has read the first', {
  timeout: 20_000,
  skip: impl.reference && 'Node sends one handle at a time: each waits for the previous ACK',
}, async (t) => {
  const COUNT = 5;
  const child = fork(path.join(__dirname, 'fixtures', 'handles', 'blocked-child.js'), [String(COUNT)], {
    stdio: ['pipe', 'inherit', 'inherit', 'ipc'],
    execArgv: [],
  });
  t.after(() => child.kill('SIGKILL'));
  assert.equal((await once(child, 'message'))[0], 'blocked');
  const peerSrv = await peerServer(t);
  const clients = await Promise.all(Array.from({ length: COUNT }, async () => {
    const client = net.connect(peerSrv.target.port, '127.0.0.1');
    await once(client, 'connect');
    return client;
  }));
  // Every send completes while the child cannot have ACKed any of them.
  await withDeadline(Promise.all(clients.map((client, n) => new Promise((resolve, reject) => {
    child.send({ n }, client, (err) => (err ? reject(err) : resolve()));
  }))), 10_000, 'all sends to complete while the child is blocked');
  const report = once(child, 'message');
  child.stdin.write('go');
  assert.deepEqual((await report)[0], { got: Array.from({ length: COUNT }, (_, n) => ({ n })) });
});

// ---------------------------------------------------------------------------------------------
// Bad cases

test('a handle of an unsupported type throws ERR_INVALID_HANDLE_TYPE synchronously', { timeout: 20_000 }, async (t) => {
  const { child, expect } = await forkChild(t);
  const stream = fs.createReadStream(__filename);
  t.after(() => stream.destroy());
  for (const handle of [{}, { fd: 0 }, stream, 42, 'handle']) {
    assert.throws(() => child.send({ op: 'seq', n: -1 }, handle), { name: 'TypeError', code: 'ERR_INVALID_HANDLE_TYPE' });
  }
  // Nothing was sent and the channel is still usable.
  child.send({ op: 'report' });
  const [report] = await expect('report');
  assert.deepEqual(report.sequence, []);
});

// The channel is closed either by us (disconnect()) or by the child going away.
for (const how of ['disconnect()', 'child exit']) {
  test(`sending a handle over a closed channel (${how}): ERR_IPC_CHANNEL_CLOSED, the handle stays ours`, { timeout: 20_000 }, async (t) => {
    const fdsBefore = fdCount();
    const { child, ended } = await forkChild(t);
    const peerSrv = await peerServer(t);
    const { client, peer } = await peerSrv.pair();
    if (how === 'disconnect()') {
      child.disconnect();
    } else {
      child.kill('SIGKILL');
      await withDeadline(ended, 10_000, 'the killed child to end');
    }
    let returned;
    const cbErr = new Promise((resolve) => {
      returned = child.send({ op: 'seq', n: 0 }, client, resolve);
    });
    assert.equal(returned, false);
    assert.equal((await withDeadline(cbErr, 5_000, 'the send callback'))?.code, 'ERR_IPC_CHANNEL_CLOSED');
    // The socket was not consumed: it still works, and closing it releases its fd.
    const atPeer = reader(peer);
    client.write('still-mine');
    await atPeer.until('still-mine');
    client.destroy();
    peer.destroy();
    await new Promise((resolve) => peerSrv.server.close(resolve));
    await withDeadline(ended, 10_000, 'the child to end');
    await assertFdsAtMost(fdsBefore, 'after the failed send');
  });
}

test('a child killed with a socket in flight leaks no fd in the parent', {
  timeout: 20_000,
  skip: impl.reference && 'Node never closes an un-ACKed sent socket when the channel hits EOF: the fd leaks and the peer never sees EOF',
}, async (t) => {
  const fdsBefore = fdCount();
  const { child, expect, ended } = await forkChild(t);
  const peerSrv = await peerServer(t);
  const { client, peer } = await peerSrv.pair();
  child.send({ op: 'block' }); // the child stops reading: our handle can't be received
  await expect('blocked');
  const peerClosed = once(peer, 'close');
  child.send({ op: 'seq', n: 0 }, client);
  child.kill('SIGKILL');
  await withDeadline(ended, 10_000, 'the killed child to end');
  // Our copy of the socket is closed: the peer sees EOF (and closes).
  await peerClosed;
  await new Promise((resolve) => peerSrv.server.close(resolve));
  await assertFdsAtMost(fdsBefore, 'after the child died with a handle in flight');
});

test('a NODE_HANDLE without an fd: the parent NACKs it and emits no message', { timeout: 20_000 }, async (t) => {
  const { child, inbox, expect } = await forkChild(t);
  child.send({ op: 'raw-handle' });
  const [reply] = await expect('reply');
  assert.equal(reply.reply, 'NODE_HANDLE_NACK');
  // Messages arrive in order, so a 'message' for the envelope would be in the inbox by now.
  assert.deepEqual(inbox.filter(([m]) => m === 'x'), []);
  // The channel is still healthy in both directions.
  child.send({ op: 'report' });
  await expect('report');
  assert.equal(child.connected, true);
});

// ---------------------------------------------------------------------------------------------
// Node's documented examples (examples/send-*.js), run as scripts. In reference mode a copy
// that requires node:child_process instead of rust-cluster is run.

function exampleScript(t, name, childName) {
  if (!impl.reference) return path.join(EXAMPLES, name);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-examples-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const file of [name, childName]) {
    const source = fs.readFileSync(path.join(EXAMPLES, file), 'utf8');
    const patched = source.replace("require('rust-cluster/child_process')", "require('node:child_process')");
    fs.writeFileSync(path.join(dir, file), patched);
  }
  return path.join(dir, name);
}

// Runs an example (always with Node's spawn: the example is what is tested) and waits for the
// port it prints.
async function runExample(t, script, args) {
  const proc = nodeChildProcess.spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  t.after(() => proc.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (d) => { stdout += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { stderr += d; });
  await until(() => /listening on 127\.0\.0\.1:\d+/.test(stdout) || proc.exitCode !== null, { what: 'the example to listen' });
  const match = /listening on 127\.0\.0\.1:(\d+)/.exec(stdout);
  assert.ok(match, `example did not start: ${stderr}`);
  return { port: Number(match[1]), exited, output: () => stderr };
}

test('example: sending a server object (examples/send-server.js)', { timeout: 30_000 }, async (t) => {
  const N = 2;
  const { port, exited, output } = await runExample(t, exampleScript(t, 'send-server.js', 'send-server-child.js'), [String(N)]);
  // Parent and child share the server; keep connecting until the child has answered N times
  // (the kernel picks the acceptor, and it is mostly the parent).
  const answers = { 'handled by parent': 0, 'handled by child': 0 };
  while (answers['handled by child'] < N) {
    const text = await fetchText(port);
    assert.ok(text in answers, `unexpected answer ${JSON.stringify(text)}`);
    answers[text]++;
  }
  const { code } = await withDeadline(exited, 10_000, 'the example to exit');
  assert.equal(code, 0, output());
});

test('example: sending a socket object (examples/send-socket.js)', { timeout: 30_000 }, async (t) => {
  const { port, exited, output } = await runExample(t, exampleScript(t, 'send-socket.js', 'send-socket-child.js'), ['4']);
  const from = ['127.0.0.1', '127.0.0.2', '127.0.0.2', '127.0.0.1'];
  const answers = await Promise.all(from.map((localAddress) => fetchText(port, { localAddress })));
  assert.deepEqual(answers, [
    'Request handled with normal priority',
    'Request handled with special priority',
    'Request handled with special priority',
    'Request handled with normal priority',
  ]);
  const { code } = await withDeadline(exited, 10_000, 'the example to exit');
  assert.equal(code, 0, output());
});

// ---------------------------------------------------------------------------------------------

test('no fd leaked by this file: children dead, servers closed', { timeout: 20_000 }, async () => {
  await assertFdsAtMost(baselineFds, 'at the end of handles.test.js');
});
