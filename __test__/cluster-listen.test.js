'use strict';
// The listen() forms a worker can use and how the primary routes them, as the running Node line
// does: relative unix paths (bound relative to the primary's directory, as Node's primary binds
// the shorter form), an inherited fd, the worker's backlog, and one fixed port taken by separate
// listen() calls. Each fixture primary runs under the implementation RC_REFERENCE picks.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startFixture: startProgram } = require('./helpers/fixture');

const FIXTURE = path.join(__dirname, 'fixtures', 'cluster', 'listen-forms.js');

function start(t, config, options = {}) {
  return startProgram(t, FIXTURE, { ...options, env: { RC_LISTEN: JSON.stringify(config), ...options.env } });
}

function get(target) {
  return new Promise((resolve, reject) => {
    http.get({ ...target, path: '/', agent: false, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => resolve(JSON.parse(body)));
    }).on('error', reject).on('timeout', function onTimeout() { this.destroy(new Error('no answer')); });
  });
}

async function bothListen(fx) {
  await fx.waitFor((r) => r.type === 'server-error' || fx.all('worker-listening').length === 2, { timeout: 15_000 });
  assert.deepEqual(fx.all('server-error'), [], 'no worker failed to listen');
  return fx.all('worker-listening');
}

function freePort() {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// A directory whose absolute path leaves no room in sun_path (107 bytes) for a socket name,
// reached through a short symlink from outside.
function deepDirectory(t) {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-listen-'));
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  const deep = path.join(base, 'd'.repeat(60), 'e'.repeat(60));
  fs.mkdirSync(deep, { recursive: true });
  const link = `${base}-l`;
  fs.symlinkSync(deep, link);
  t.after(() => fs.rmSync(link, { force: true }));
  return { deep, link };
}

test('a relative unix path is bound from the primary\'s directory, even when its absolute form is too long for sun_path', { timeout: 30_000 }, async (t) => {
  const { deep, link } = deepDirectory(t);
  assert.ok(path.join(deep, 'app.sock').length > 108);
  const fx = start(t, { listen: { path: 'app.sock' } }, { cwd: deep });
  const workers = await bothListen(fx);
  assert.ok(fs.lstatSync(path.join(deep, 'app.sock')).isSocket(), 'the socket file is in the primary\'s directory');
  const { id } = await get({ socketPath: path.join(link, 'app.sock') });
  assert.ok(workers.some((w) => w.id === id));
});

test('listen({ fd }) in a worker serves the socket the primary holds at that fd', { timeout: 30_000 }, async (t) => {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  const fx = start(t, { listen: { fd: 3 } }, { fds: [server._handle.fd] });
  // From here only the primary holds the socket.
  server.close();
  await bothListen(fx);
  const ids = new Set();
  for (let i = 0; i < 20 && ids.size < 2; i++) ids.add((await get({ host: '127.0.0.1', port })).id);
  assert.ok(ids.size >= 1, 'requests to the inherited socket are answered by workers');
});

test('the primary makes a round-robin server through net.Server#listen, with the worker\'s options, once', { timeout: 30_000 }, async (t) => {
  const fx = start(t, { wrap: true, listen: { port: 0, host: '127.0.0.1', backlog: 7 } }, { env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } });
  await bothListen(fx);
  const { calls } = fx.all('listening').at(-1);
  assert.deepEqual(calls, [{ port: 0, host: '127.0.0.1', ipv6Only: false, backlog: 7 }]);
});

test("the backlog a worker asks for is the listening socket's", { timeout: 30_000 }, async (t) => {
  const fx = start(t, { listen: { port: 0, host: '127.0.0.1', backlog: 7 } });
  const [{ address }] = await bothListen(fx);
  const line = execFileSync('ss', ['-ltnH', `sport = :${address.port}`], { encoding: 'utf8' }).trim().split('\n')[0];
  const [, , sendQ] = line.split(/\s+/);
  assert.equal(Number(sendQ), 7, `ss: ${line}`);
});

// nodejs/node#60141: from 22.23, 24.22 and 26 on, Node's primary keys a fixed-port server without
// the worker's listen index. A failed listen() still uses up an index, so before that a worker
// that retries a port another worker took meanwhile asks under another key, and its bind fails.
const nodeKeysByPort = (() => {
  const [major, minor] = process.versions.node.split('.').map(Number);
  return major >= 25 || (major === 24 && minor >= 22) || (major === 22 && minor >= 23);
})();

test(`a worker that retries a fixed port another worker took meanwhile: ${nodeKeysByPort ? 'they share it' : 'EADDRINUSE'}, as this Node line does`, { timeout: 30_000 }, async (t) => {
  const holder = net.createServer();
  await new Promise((resolve) => holder.listen(0, '127.0.0.1', resolve));
  const { port } = holder.address();
  const fx = start(t, { retry: true, listen: { port, host: '127.0.0.1' } });
  assert.equal((await fx.waitFor('first-error', { timeout: 15_000 })).code, 'EADDRINUSE');
  await new Promise((resolve) => holder.close(resolve));
  fx.child.kill('SIGUSR2');
  await fx.waitFor((r) => (r.type === 'worker-listening' && r.id === 1) || r.type === 'server-error', { timeout: 15_000 });
  if (nodeKeysByPort) {
    await bothListen(fx);
    const ids = new Set();
    for (let i = 0; i < 40 && ids.size < 2; i++) ids.add((await get({ host: '127.0.0.1', port })).id);
    assert.equal(ids.size, 2, 'both workers serve the port');
  } else {
    assert.deepEqual(fx.all('server-error'), [{ type: 'server-error', id: 1, code: 'EADDRINUSE' }]);
  }
});
