'use strict';
// rust-cluster/ipc: fork()'s message channel between unrelated processes, over a unix-domain
// socket path (with handle passing) or TCP. Most tests run once per transport.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const { isDeepStrictEqual } = require('node:util');
// Node's own spawn starts the unrelated processes (fixtures, examples); it is not under test.
const { spawn } = require('node:child_process');

const ipc = require('../ipc');
const { once, many, until } = require('./helpers/wait');

const FIXTURES = path.join(__dirname, 'fixtures', 'ipc');
const EXAMPLES = path.join(__dirname, '..', 'examples');
const TRANSPORTS = ['unix', 'tcp'];

// ---------------------------------------------------------------------------------------------
// Helpers

// A fresh socket path in a temp dir that is removed after the test.
function socketPath(t, name = 'ipc.sock') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-ipc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, name);
}

function isSocket(file) {
  try {
    return fs.lstatSync(file).isSocket();
  } catch {
    return false;
  }
}

function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()));
}

// An ipc server listening on a temp unix path or on a free loopback port, closed after the test.
// `target` is what connect() (and the fixture, as argv) takes. Every channel it accepts is kept
// in `channels`, in order.
async function listen(t, transport, options = {}, connectionListener) {
  const server = ipc.createServer(options, connectionListener);
  const channels = [];
  server.on('connection', (channel) => channels.push(channel));
  let target;
  if (transport === 'unix') {
    target = socketPath(t);
    server.listen(target);
  } else {
    server.listen(0, '127.0.0.1');
  }
  await once(server, 'listening');
  if (transport === 'tcp') target = { port: server.address().port, host: '127.0.0.1' };
  t.after(() => closeServer(server));
  return { server, channels, target };
}

// A connected client channel, disconnected after the test.
async function connect(t, target, options) {
  const channel = ipc.connect(target, options);
  t.after(() => {
    if (channel.connected) channel.disconnect();
  });
  await once(channel, 'connect');
  return channel;
}

// The next `count` server-side channels (call before the clients connect).
function nextConnections(server, count = 1) {
  return many(server, 'connection', count).then((all) => all.map(([channel]) => channel));
}

// Every message an emitter delivers lands in an inbox, so nothing is missed between awaits;
// `expect(match)` takes out the first one that matches (a predicate or an `op`).
function inbox(emitter) {
  const items = [];
  const arrived = new EventEmitter();
  emitter.on('message', (message, handle) => {
    items.push([message, handle]);
    arrived.emit('message');
  });
  return {
    items,
    async expect(match, timeout = 10_000) {
      const test = typeof match === 'function' ? match : (m) => m && m.op === match;
      const deadline = Date.now() + timeout;
      for (;;) {
        const i = items.findIndex(([m]) => test(m));
        if (i >= 0) return items.splice(i, 1)[0];
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new Error(`timed out waiting for message ${match.name || match}; got ${JSON.stringify(items.map(([m]) => m))}`);
        }
        await once(arrived, 'message', { timeout: left }).catch(() => {});
      }
    },
  };
}

// A fixture run by spawn (an unrelated process, not a fork), SIGKILLed after the test if alive.
function spawnFixture(t, name, args) {
  const child = spawn(process.execPath, [path.join(FIXTURES, name), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const lines = [];
  readline.createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, exited, lines };
}

function targetArg(target) {
  return typeof target === 'string' ? target : JSON.stringify(target);
}

// A plain `net` connection to an ipc server (no rust-cluster on this side).
async function rawConnect(t, target) {
  const socket = typeof target === 'string' ? net.connect(target) : net.connect(target.port, target.host);
  t.after(() => socket.destroy());
  await once(socket, 'connect');
  return socket;
}

// Reads JSON lines (Node's json wire format) from a plain socket.
function jsonLines(socket) {
  const messages = [];
  const arrived = new EventEmitter();
  readline.createInterface({ input: socket }).on('line', (line) => {
    messages.push(JSON.parse(line));
    arrived.emit('line');
  });
  return {
    messages,
    async count(n) {
      while (messages.length < n) {
        await once(arrived, 'line').catch(() => {
          throw new Error(`timed out: ${messages.length}/${n} lines read: ${JSON.stringify(messages)}`);
        });
      }
      return messages.slice(0, n);
    },
  };
}

// A plain TCP server on a free loopback port; it and every connection it accepted are closed
// after the test (close() alone would wait for those connections).
async function tcpServer(t) {
  const server = net.createServer();
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return closeServer(server);
  });
  return server;
}

// One whole response from a server that writes and ends the connection.
function fetchText(port) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => { text += d; });
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what()}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// The server answers every message with {echo: message}.
function echo(channel) {
  channel.on('message', (message) => channel.send({ echo: message }));
}

// ---------------------------------------------------------------------------------------------
// Messages

for (const transport of TRANSPORTS) {
  test(`${transport}: messages both ways with a client in another process (spawned, not forked)`, { timeout: 20_000 }, async (t) => {
    const { server, target } = await listen(t, transport);
    const connected = nextConnections(server);
    const { child, exited } = spawnFixture(t, 'client.js', [targetArg(target)]);
    const [channel] = await connected;
    const messages = inbox(channel);
    const [ready] = await messages.expect('ready');
    assert.equal(ready.pid, child.pid);
    if (transport === 'unix') assert.equal(server.address(), target);
    else assert.equal(server.address().port, target.port);

    const sent = [{ n: 1, text: 'héllo ☃' }, 'a string', 42, true, { nested: { list: [1, 2, 3] } }];
    for (const message of sent) assert.equal(channel.send(message), true);
    for (const message of sent) {
      const [reply] = await messages.expect((m) => m && m.op === 'echo' && isDeepStrictEqual(m.message, message));
      assert.equal(reply.pid, child.pid);
    }

    // The server closing disconnects the client, whose process then has nothing left to do.
    const disconnected = once(channel, 'disconnect');
    await closeServer(server);
    await disconnected;
    assert.deepEqual(await exited, { code: 0, signal: null });
  });

  test(`${transport}: ten clients each talk to the server, and broadcast() reaches them all`, { timeout: 20_000 }, async (t) => {
    const { server, channels, target } = await listen(t, transport, {}, (channel) => {
      channel.on('message', (m) => channel.send({ reply: m.id, to: m.id }));
    });
    const N = 10;
    const connected = nextConnections(server, N);
    const clients = await Promise.all(Array.from({ length: N }, () => connect(t, target)));
    await connected;
    assert.equal(channels.length, N);
    const inboxes = clients.map((c) => inbox(c));

    clients.forEach((client, id) => client.send({ id }));
    for (let id = 0; id < N; id++) {
      const [reply] = await inboxes[id].expect((m) => m && 'reply' in m);
      assert.deepEqual(reply, { reply: id, to: id }, `client ${id} got its own answer`);
    }

    server.broadcast({ op: 'news', text: 'to everyone' });
    for (let id = 0; id < N; id++) {
      const [news] = await inboxes[id].expect('news');
      assert.deepEqual(news, { op: 'news', text: 'to everyone' });
    }
    // Nothing else arrived: each client got exactly its reply and one broadcast.
    for (const box of inboxes) assert.deepEqual(box.items, []);
  });

  test(`${transport}: serialization 'advanced' on both ends carries Map, Set and BigInt`, { timeout: 20_000 }, async (t) => {
    const { target } = await listen(t, transport, { serialization: 'advanced' }, echo);
    const client = await connect(t, target, { serialization: 'advanced' });
    const message = {
      map: new Map([['a', 1], [2, { b: [3n] }]]),
      set: new Set(['x', 1, 2n ** 70n]),
      big: -(2n ** 100n),
      date: new Date(0),
      bytes: new Uint8Array([0, 1, 255]),
    };
    client.send(message);
    const [reply] = await once(client, 'message');
    assert.ok(reply.echo.map instanceof Map);
    assert.ok(reply.echo.set instanceof Set);
    assert.equal(typeof reply.echo.big, 'bigint');
    assert.deepEqual(reply.echo, message);
  });

  test(`${transport}: 100,000 messages arrive, none lost or reordered`, { timeout: 30_000 }, async (t) => {
    const { server, target } = await listen(t, transport);
    const connected = nextConnections(server);
    const client = await connect(t, target);
    const [channel] = await connected;
    const COUNT = 100_000;
    let expected = 0;
    const wrong = [];
    const done = new Promise((resolve) => {
      channel.on('message', (m) => {
        if (m.seq !== expected) wrong.push({ expected, got: m.seq });
        expected = m.seq + 1;
        if (m.seq === COUNT - 1) resolve();
      });
    });
    for (let seq = 0; seq < COUNT; seq++) client.send({ seq, pad: 'x'.repeat(16) });
    await withDeadline(done, 20_000, () => `message ${COUNT - 1} (got up to ${expected})`);
    assert.deepEqual(wrong.slice(0, 10), []);
    assert.equal(expected, COUNT);
  });

  test(`${transport}: a plain net client writing and reading JSON lines (Node's format) talks to the server`, { timeout: 20_000 }, async (t) => {
    const { target } = await listen(t, transport, {}, echo);
    const socket = await rawConnect(t, target);
    const lines = jsonLines(socket);
    // One line, two lines in one write, and one line split across writes.
    socket.write(`${JSON.stringify({ hello: 'world' })}\n`);
    socket.write(`${JSON.stringify([1, 'two'])}\n${JSON.stringify('three')}\n`);
    const split = JSON.stringify({ split: 'across writes', n: 4 });
    socket.write(split.slice(0, 7));
    await new Promise((resolve) => setImmediate(resolve));
    socket.write(`${split.slice(7)}\n`);
    assert.deepEqual(await lines.count(4), [
      { echo: { hello: 'world' } },
      { echo: [1, 'two'] },
      { echo: 'three' },
      { echo: { split: 'across writes', n: 4 } },
    ]);
  });

  test(`${transport}: a client that disconnects mid-message does not stop the server`, { timeout: 20_000 }, async (t) => {
    const { server, target } = await listen(t, transport, {}, echo);
    const connected = nextConnections(server);
    const raw = await rawConnect(t, target);
    const [half] = await connected;
    const errors = [];
    half.on('error', (err) => errors.push(err));
    const disconnected = once(half, 'disconnect');
    raw.write('{"cmd":"hal');
    raw.destroy();
    await disconnected;
    assert.equal(half.connected, false);
    // The truncated tail of a closed connection is dropped, as Node drops it.
    assert.deepEqual(errors, []);

    const client = await connect(t, target);
    client.send('still there?');
    const [reply] = await once(client, 'message');
    assert.deepEqual(reply, { echo: 'still there?' });
  });

  test(`${transport}: a peer writing garbage gets an ERR_IPC_MESSAGE 'error' on its channel; others are still served`, { timeout: 20_000 }, async (t) => {
    const { server, target } = await listen(t, transport, {}, echo);
    const good = await connect(t, target);
    const connected = nextConnections(server);
    const raw = await rawConnect(t, target);
    raw.on('error', () => {});
    const [bad] = await connected;
    const failed = once(bad, 'error');
    raw.write('not json\n');
    const [err] = await failed;
    assert.ok(err instanceof Error);
    assert.equal(err.code, 'ERR_IPC_MESSAGE');
    assert.match(err.message, /IPC/);

    good.send({ after: 'garbage' });
    const [reply] = await once(good, 'message');
    assert.deepEqual(reply, { echo: { after: 'garbage' } });
    // A client connecting afterwards is served too.
    const late = await connect(t, target);
    late.send('late');
    assert.deepEqual((await once(late, 'message'))[0], { echo: 'late' });
  });

  test(`${transport}: an advanced frame V8 cannot read is an ERR_IPC_MESSAGE 'error' with its bytes as err.raw`, { timeout: 20_000 }, async (t) => {
    const { server, target } = await listen(t, transport, { serialization: 'advanced' }, echo);
    const connected = nextConnections(server);
    const raw = await rawConnect(t, target);
    raw.on('error', () => {});
    const [bad] = await connected;
    const failed = once(bad, 'error');
    // A V8 header, then a byte that is no tag; 0xe9 is not ASCII, so a lossy text path shows.
    const payload = Buffer.from([0xff, 0x0f, 0xe9, 0x80, 0x00]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(payload.length);
    raw.write(Buffer.concat([length, payload]));
    const [err] = await failed;
    assert.equal(err.code, 'ERR_IPC_MESSAGE');
    assert.ok(Buffer.isBuffer(err.raw));
    assert.deepEqual(err.raw, payload);
  });

  for (const serialization of ['json', 'advanced']) {
    test(`${transport}: a message over maxMessageSize (${serialization}) is an ERR_IPC_MESSAGE 'error' and closes that channel`, { timeout: 20_000 }, async (t) => {
      // 8 KiB arrives in one read: the limit must hold however the stream is split.
      const { server, target } = await listen(t, transport, { maxMessageSize: 1024, serialization }, echo);
      const connected = nextConnections(server);
      const client = await connect(t, target, { serialization });
      const [channel] = await connected;
      const failed = once(channel, 'error', { timeout: 5_000 });
      const closed = once(channel, 'disconnect', { timeout: 5_000 });
      closed.catch(() => {});
      client.send('x'.repeat(8 * 1024));
      const [err] = await failed;
      assert.equal(err.code, 'ERR_IPC_MESSAGE');
      await closed;
      // The server itself still serves.
      const other = await connect(t, target, { serialization });
      other.send('small');
      assert.deepEqual((await once(other, 'message'))[0], { echo: 'small' });
    });
  }

  test(`${transport}: connect() to nothing is an 'error' on the channel`, { timeout: 20_000 }, async (t) => {
    let target;
    if (transport === 'unix') {
      target = socketPath(t);
    } else {
      // A port that was free a moment ago.
      const s = await tcpServer(t);
      target = { port: s.address().port, host: '127.0.0.1' };
      await closeServer(s);
    }
    const channel = ipc.connect(target);
    const [err] = await once(channel, 'error');
    assert.equal(err.code, transport === 'unix' ? 'ENOENT' : 'ECONNREFUSED');
    assert.equal(channel.connected, false);
  });
}

// ---------------------------------------------------------------------------------------------
// Handles

test('unix: a net.Server sent to a client process is used by that process', { timeout: 20_000 }, async (t) => {
  const { server, target } = await listen(t, 'unix');
  const connected = nextConnections(server);
  const { child } = spawnFixture(t, 'client.js', [target]);
  const [channel] = await connected;
  const messages = inbox(channel);
  await messages.expect('ready');

  const tcp = await tcpServer(t);
  const { port } = tcp.address();
  await new Promise((resolve, reject) => {
    channel.send({ op: 'serve' }, tcp, (err) => (err ? reject(err) : resolve()));
  });
  const [serving] = await messages.expect('serving');
  assert.equal(serving.port, port);
  // Our copy is closed, so the client process is the only one accepting on the port.
  await closeServer(tcp);
  assert.equal(await fetchText(port), `served by ${child.pid}\n`);
});

test('unix: a connected net.Socket sent by a client is used by the server', { timeout: 20_000 }, async (t) => {
  const { server, target } = await listen(t, 'unix');
  const connected = nextConnections(server);
  const client = await connect(t, target);
  const [channel] = await connected;

  // A TCP connection whose client end is passed over the channel; `peer` is its far end.
  const tcp = await tcpServer(t);
  const accepted = once(tcp, 'connection');
  const socket = net.connect(tcp.address().port, '127.0.0.1');
  await once(socket, 'connect');
  const [peer] = await accepted;
  t.after(() => peer.destroy());
  peer.setEncoding('utf8');

  const received = once(channel, 'message');
  client.send({ op: 'take' }, socket);
  const [message, handle] = await received;
  assert.deepEqual(message, { op: 'take' });
  assert.ok(handle instanceof net.Socket, 'the handle arrives as a net.Socket');
  t.after(() => handle.destroy());

  handle.setEncoding('utf8');
  handle.write('from the receiver');
  const [fromReceiver] = await once(peer, 'data');
  assert.equal(fromReceiver, 'from the receiver');
  peer.write('to the receiver');
  const [toReceiver] = await once(handle, 'data');
  assert.equal(toReceiver, 'to the receiver');
});

test('unix: broadcast() with a net.Server gives every client its own listening copy', { timeout: 20_000 }, async (t) => {
  const { server, target } = await listen(t, 'unix');
  const N = 3;
  const connected = nextConnections(server, N);
  const clients = await Promise.all(Array.from({ length: N }, () => connect(t, target)));
  await connected;
  const tcp = await tcpServer(t);
  const { port } = tcp.address();
  const received = clients.map((client) => once(client, 'message'));
  server.broadcast({ op: 'serve' }, tcp);
  for (const [message, handle] of await Promise.all(received)) {
    assert.deepEqual(message, { op: 'serve' });
    assert.ok(handle instanceof net.Server, 'the handle arrives as a net.Server');
    t.after(() => closeServer(handle));
    assert.equal(handle.listening, true);
    assert.equal(handle.address().port, port);
  }
});

test('tcp: sending a handle is a synchronous ERR_INVALID_HANDLE_TYPE that names TCP; the channel still works', { timeout: 20_000 }, async (t) => {
  const { server, target } = await listen(t, 'tcp', {}, echo);
  const connected = nextConnections(server);
  const client = await connect(t, target);
  const [channel] = await connected;
  const handle = await tcpServer(t);
  const invalid = (err) => {
    assert.equal(err.code, 'ERR_INVALID_HANDLE_TYPE');
    assert.match(err.message, /TCP/);
    return true;
  };
  assert.throws(() => client.send('with a handle', handle), invalid);
  assert.throws(() => client.send('with a handle', handle, () => {}), invalid);
  assert.throws(() => channel.send('with a handle', handle), invalid);
  assert.throws(() => server.broadcast('with a handle', handle), invalid);

  client.send('without');
  assert.deepEqual((await once(client, 'message'))[0], { echo: 'without' });
  // The handle was not touched.
  assert.equal(handle.listening, true);
});

test('tcp: a handle sent before the connection is up is also a synchronous error, and later messages still go', { timeout: 20_000 }, async (t) => {
  const { server, target } = await listen(t, 'tcp');
  const connected = nextConnections(server);
  connected.catch(() => {}); // awaited below, unless an assertion fails first
  const handle = await tcpServer(t);
  const client = ipc.connect(target);
  t.after(() => client.connected && client.disconnect());
  const errors = [];
  client.on('error', (err) => errors.push(err));
  client.send('first');
  assert.throws(() => client.send('with a handle', handle), { code: 'ERR_INVALID_HANDLE_TYPE', message: /TCP/ });
  client.send('second');
  await once(client, 'connect');
  const [channel] = await connected;
  const got = await many(channel, 'message', 2);
  assert.deepEqual(got.map(([m]) => m), ['first', 'second']);
  assert.deepEqual(errors, []);
});

// ---------------------------------------------------------------------------------------------
// Socket files

test('unix: the socket file is created with mode 0o600 by default, and removed on close', { timeout: 20_000 }, async (t) => {
  const file = socketPath(t);
  const server = ipc.createServer(echo);
  t.after(() => closeServer(server));
  server.listen(file);
  await once(server, 'listening');
  assert.ok(isSocket(file));
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);

  const client = await connect(t, file);
  const disconnected = once(client, 'disconnect');
  await closeServer(server);
  assert.equal(fs.existsSync(file), false, 'the socket file is gone after close');
  // Closing the server also disconnects its clients.
  await disconnected;
});

test('unix: the socket file is never, even for a moment, wider than its mode (umask 0)', { timeout: 20_000 }, async (t) => {
  // Under a umask of 0, bind() makes the file 0o777: anyone could connect until a later chmod.
  const file = socketPath(t);
  const server = ipc.createServer();
  t.after(() => closeServer(server));
  const listening = once(server, 'listening');
  const umask = process.umask(0);
  let early;
  try {
    server.listen(file);
    // Whatever exists as soon as listen() returns is already reachable by connect().
    if (fs.existsSync(file)) early = fs.statSync(file).mode & 0o777;
  } finally {
    process.umask(umask);
  }
  await listening;
  if (early !== undefined) {
    assert.equal(early & ~0o600, 0, `the socket file was 0o${early.toString(8)} before its chmod to 0o600`);
  }
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test('unix: the mode option widens the socket file permissions', { timeout: 20_000 }, async (t) => {
  for (const mode of [0o660, 0o666]) {
    const file = socketPath(t, `mode-${mode.toString(8)}.sock`);
    const server = ipc.createServer({ mode }, echo);
    t.after(() => closeServer(server));
    server.listen(file);
    await once(server, 'listening');
    assert.equal(fs.statSync(file).mode & 0o777, mode);
    const client = await connect(t, file);
    client.send(mode);
    assert.deepEqual((await once(client, 'message'))[0], { echo: mode });
  }
});

for (const kind of ['ipc', 'raw']) {
  test(`unix: a stale socket file left by a SIGKILLed ${kind === 'raw' ? 'plain net' : 'ipc'} server is replaced`, { timeout: 20_000 }, async (t) => {
    const file = socketPath(t);
    const { child, exited, lines } = spawnFixture(t, 'listener.js', [file, kind]);
    await until(() => lines.includes('listening'), { what: 'the fixture server to listen' });
    child.kill('SIGKILL');
    assert.equal((await exited).signal, 'SIGKILL');
    assert.ok(isSocket(file), 'the dead server left its socket file behind');

    const server = ipc.createServer(echo);
    t.after(() => closeServer(server));
    const errors = [];
    server.on('error', (err) => errors.push(err));
    server.listen(file);
    await once(server, 'listening');
    assert.deepEqual(errors, []);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const client = await connect(t, file);
    client.send('over the replaced file');
    assert.deepEqual((await once(client, 'message'))[0], { echo: 'over the replaced file' });
  });
}

test("unix: a live server's socket file is not replaced: the second server gets EADDRINUSE", { timeout: 20_000 }, async (t) => {
  const { server: first, target: file } = await listen(t, 'unix', {}, (channel) => {
    channel.on('message', (m) => channel.send({ first: m }));
  });
  const { ino } = fs.statSync(file);

  const second = ipc.createServer(echo);
  t.after(() => closeServer(second));
  const listening = [];
  second.on('listening', () => listening.push(true));
  second.listen(file);
  const [err] = await once(second, 'error');
  assert.equal(err.code, 'EADDRINUSE');
  assert.match(err.message, /EADDRINUSE/);
  assert.ok(err.message.includes(file), 'the message names the path');
  assert.deepEqual(listening, []);

  // The first server still owns the file and serves.
  assert.equal(fs.statSync(file).ino, ino);
  const client = await connect(t, file);
  client.send('who?');
  assert.deepEqual((await once(client, 'message'))[0], { first: 'who?' });

  // A live plain net server's file is not taken over either.
  const rawFile = socketPath(t, 'raw.sock');
  const raw = net.createServer();
  raw.listen(rawFile);
  await once(raw, 'listening');
  t.after(() => closeServer(raw));
  const third = ipc.createServer();
  t.after(() => closeServer(third));
  third.listen(rawFile);
  const [err3] = await once(third, 'error');
  assert.equal(err3.code, 'EADDRINUSE');
  assert.equal(first.address(), file);
});

// ---------------------------------------------------------------------------------------------
// ref / unref

for (const transport of TRANSPORTS) {
  test(`${transport}: a client process that unref()s its channel exits by itself; one that does not stays`, { timeout: 20_000 }, async (t) => {
    const { server, target } = await listen(t, transport);
    // Each channel's inbox is there from its 'connection' on, so no early message is missed.
    const inboxes = new Map();
    const disconnects = new Map();
    server.on('connection', (channel) => {
      inboxes.set(channel, inbox(channel));
      disconnects.set(channel, new Promise((resolve) => channel.once('disconnect', resolve)));
    });
    const connected = nextConnections(server, 2);
    // Both do the same work; only one unref()s its channel.
    const unref = spawnFixture(t, 'client.js', [targetArg(target), 'unref']);
    const ref = spawnFixture(t, 'client.js', [targetArg(target), 'ref']);
    const channels = await connected;
    const boxes = channels.map((c) => inboxes.get(c));
    const readies = await Promise.all(boxes.map((box) => box.expect('ready')));
    const byMode = {};
    readies.forEach(([m], i) => { byMode[m.mode] = { channel: channels[i], box: boxes[i], pid: m.pid }; });
    assert.equal(byMode.unref.pid, unref.child.pid);
    assert.equal(byMode.ref.pid, ref.child.pid);

    // The unref'd one exits on its own, cleanly, while the server lives on.
    assert.deepEqual(await withDeadline(unref.exited, 10_000, () => 'the unref\'d client to exit'), { code: 0, signal: null });
    await withDeadline(disconnects.get(byMode.unref.channel), 10_000, () => "the unref'd client's 'disconnect'");
    assert.equal(byMode.unref.channel.connected, false);

    // By then the ref'd one has had as long to exit, and has not: it still answers.
    byMode.ref.channel.send('still there?');
    const [answer] = await byMode.ref.box.expect('echo');
    assert.equal(answer.message, 'still there?');
    assert.equal(ref.child.exitCode, null);
    assert.equal(ref.child.signalCode, null);
    assert.equal(byMode.ref.channel.connected, true);
  });
}

test('unix: ref() after unref() keeps a client process alive until its answer; unref() then lets it exit', { timeout: 20_000 }, async (t) => {
  const { target } = await listen(t, 'unix', {}, echo);
  const script = `
    const ipc = require(${JSON.stringify(path.join(__dirname, '..', 'ipc'))});
    const c = ipc.connect(${JSON.stringify(target)}, () => {
      c.unref();
      c.ref();
      c.send('ping');
    });
    c.on('message', (m) => {
      process.stdout.write(JSON.stringify(m) + '\\n');
      c.unref();
    });
  `;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'));
  let out = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d) => { out += d; });
  const [code, signal] = await once(child, 'exit');
  assert.deepEqual({ code, signal, out }, { code: 0, signal: null, out: '{"echo":"ping"}\n' });
});

// ---------------------------------------------------------------------------------------------
// Examples

test('examples/pipe-server.js and pipe-client.js echo hello over PIPE_PATH', { timeout: 20_000 }, async (t) => {
  const pipePath = socketPath(t, 'example.sock');
  const run = (name) => {
    const child = spawn(process.execPath, [path.join(EXAMPLES, name)], {
      cwd: EXAMPLES,
      env: { ...process.env, PIPE_PATH: pipePath },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines = [];
    const stderr = [];
    readline.createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
    readline.createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
    let exit;
    child.on('exit', (code, signal) => { exit = { code, signal }; });
    t.after(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    });
    return { child, lines, stderr, get exit() { return exit; } };
  };

  const server = run('pipe-server.js');
  // Listening: the socket file is there with its final mode (the example prints nothing then).
  await until(() => (isSocket(pipePath) && (fs.statSync(pipePath).mode & 0o777) === 0o600) || server.exit, {
    what: 'the example server to listen',
  });
  assert.equal(server.exit, undefined, `the server exited: ${server.stderr.join('\n')}`);

  const client = run('pipe-client.js');
  // The client sends every 3 s; one round is enough.
  await until(() => client.lines.includes('receive: hello') || client.exit || server.exit, {
    timeout: 15_000,
    what: 'the echo of hello',
  });
  assert.equal(client.exit, undefined, `the client exited: ${client.stderr.join('\n')}`);
  assert.deepEqual(client.lines.slice(0, 3), ['connected.', 'send: hello', 'receive: hello']);
  await until(() => server.lines.length >= 3, { what: 'the server log' });
  assert.deepEqual(server.lines.slice(0, 3), ['socket connected.', 'receive: hello', 'send: hello']);
  assert.deepEqual([...server.stderr, ...client.stderr], []);

  // The client going away is logged by the server.
  client.child.kill('SIGKILL');
  await until(() => server.lines.includes('disconnected.'), { what: "the server's 'disconnected.'" });
});

// Everything the loop reads in one wake-up reaches JavaScript in one call; a batch longer than a
// call's arguments should carry goes as one array. 100 channels whose peers each write a message
// and end in the same tick give it ~200 events at once (more than 64 channels' worth).
test('unix: 100 channels each given a message and an end at once: every message, then its disconnect', { timeout: 20_000 }, async (t) => {
  const COUNT = 100;
  const { server, target } = await listen(t, 'unix');
  const connected = nextConnections(server, COUNT);
  const sockets = await Promise.all(Array.from({ length: COUNT }, () => rawConnect(t, target)));
  const channels = await connected;
  const seen = channels.map(() => []);
  const ended = Promise.all(channels.map((channel, k) => new Promise((resolve) => {
    channel.on('message', (m) => seen[k].push(m));
    channel.on('disconnect', () => {
      seen[k].push('disconnect');
      resolve();
    });
  })));
  // Which socket is which channel is for the messages to say.
  sockets.forEach((socket, k) => socket.end(`${JSON.stringify({ k })}\n`));
  await withDeadline(ended, 10_000, () => `disconnects (${seen.filter((s) => s.includes('disconnect')).length}/${COUNT})`);
  const byPeer = seen.map((events) => events[0]?.k);
  assert.deepEqual([...byPeer].sort((a, b) => a - b), Array.from({ length: COUNT }, (_, k) => k));
  for (const events of seen) assert.deepEqual(events, [{ k: events[0].k }, 'disconnect']);
});
