'use strict';
// lib/worker-drain.js, the preload that makes a primary-initiated disconnect drop no request.
// Node's worker code answers the primary's disconnect with server.close(), and since Node 19 that
// destroys idle keep-alive connections at once: a client sending its next request on one gets a
// reset. With the preload the idle connection stays open, its next response says
// `Connection: close`, and then the server closes it.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const path = require('node:path');
const { cluster } = require('./helpers/impl');
const { once, until } = require('./helpers/wait');
const { FIXTURES, freePort } = require('./helpers/supervisor');

const PRELOAD = path.join(__dirname, '..', 'lib', 'worker-drain.js');

// A raw keep-alive HTTP/1.1 client on one connection: request() resolves with the next whole
// response's head and body (the fixture answers 'ok\n' with a Content-Length).
function rawClient(port) {
  const socket = net.connect(port, '127.0.0.1');
  socket.setEncoding('utf8');
  let buffered = '';
  let waiting = null;
  const client = { socket, ended: false };
  client.endedPromise = new Promise((resolve) => socket.on('close', () => resolve((client.ended = true))));
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    buffered += chunk;
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0 || !waiting) return;
    const head = buffered.slice(0, end);
    const length = Number(/content-length: (\d+)/i.exec(head)[1]);
    if (buffered.length < end + 4 + length) return;
    const body = buffered.slice(end + 4, end + 4 + length);
    buffered = buffered.slice(end + 4 + length);
    const resolve = waiting;
    waiting = null;
    resolve({ head, body });
  });
  client.request = () => {
    const response = new Promise((resolve, reject) => {
      waiting = resolve;
      socket.once('close', () => reject(new Error('connection closed before the response')));
    });
    socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    return response;
  };
  return client;
}

async function startWorker(t, execArgv) {
  const port = await freePort();
  cluster.setupPrimary({ exec: path.join(FIXTURES, 'drain-probe.js'), execArgv, silent: true });
  const worker = cluster.fork({ PORT: String(port) });
  t.after(() => worker.process.kill('SIGKILL'));
  let stdout = '';
  worker.process.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
  await once(worker, 'listening');
  const handled = until(() => stdout.includes('disconnect handled'), { what: "the worker's disconnect" });
  return { worker, port, handled };
}

test("without the preload, Node's disconnect closes an idle keep-alive connection at once (the race)", async (t) => {
  const { worker, port, handled } = await startWorker(t, []);
  const client = rawClient(port);
  assert.match((await client.request()).head, /connection: keep-alive/i);
  worker.disconnect();
  await handled;
  await client.endedPromise;
  assert.equal(client.ended, true);
});

test('with the preload, the idle connection stays open and its next response closes it', async (t) => {
  const { worker, port, handled } = await startWorker(t, ['--require', PRELOAD]);
  const client = rawClient(port);
  assert.match((await client.request()).head, /connection: keep-alive/i);
  const exited = once(worker, 'exit');
  worker.disconnect();
  await handled;
  assert.equal(client.ended, false, 'the idle connection was closed by the drain');
  const { head, body } = await client.request();
  assert.match(head, /^HTTP\/1.1 200/);
  assert.match(head, /connection: close/i);
  assert.equal(body, 'ok\n');
  await client.endedPromise;
  // Its last connection gone, the worker leaves by itself.
  const [code, signal] = await exited;
  assert.deepEqual({ code, signal }, { code: 0, signal: null });
});

test('the preload does nothing in a process that is not a cluster worker', async () => {
  const { execFileSync } = require('node:child_process');
  const out = execFileSync(process.execPath, ['--require', PRELOAD, '-e', "process.stdout.write(String(process.listenerCount('SIGINT')))"], { encoding: 'utf8' });
  assert.equal(out, '0');
});
