'use strict';
// The figures the core gathers for monitoring (binding.stats()), read without involving the
// children: each must move when what it counts happens.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const path = require('node:path');
const impl = require('./helpers/impl');
const { once, until } = require('./helpers/wait');
const { startFixture } = require('./helpers/fixture');

const OURS_ONLY = impl.reference && "rust-cluster's own figures";
const MB = 1 << 20;
const fixture = (name) => path.join(__dirname, 'fixtures', 'stats', name);

function statsOf(child) {
  const { binding } = require('../lib/native');
  const stats = binding.stats();
  const id = child._id;
  return { channel: stats.channels.find((c) => c.id === id), usage: stats.children.find((c) => c.id === id) };
}

async function ask(child, message) {
  const answered = once(child, 'message');
  child.send(message);
  await answered;
}

test('channel traffic: frames and bytes each way', { skip: OURS_ONLY }, async (t) => {
  const child = impl.child_process.fork(fixture('child.js'), [], { execArgv: [] });
  t.after(() => child.kill('SIGKILL'));
  const messages = Array.from({ length: 10 }, (_, i) => ({ i, text: 'x'.repeat(i) }));
  const echoed = new Promise((resolve) => {
    let n = 0;
    child.on('message', () => ++n === messages.length && resolve());
  });
  for (const m of messages) child.send(m);
  await echoed;
  const bytes = messages.reduce((sum, m) => sum + JSON.stringify(m).length + 1, 0);
  const { channel } = statsOf(child);
  assert.deepEqual(channel, { id: child._id, framesIn: 10, bytesIn: bytes, framesOut: 10, bytesOut: bytes });
});

test("a child's memory and CPU, from /proc: 100 MB allocated shows, a busy second shows", { skip: OURS_ONLY }, async (t) => {
  const child = impl.child_process.fork(fixture('child.js'), [], { execArgv: [] });
  t.after(() => child.kill('SIGKILL'));
  await ask(child, { op: 'hello' });
  const before = statsOf(child).usage;
  assert.equal(before.pid, child.pid);
  await ask(child, { op: 'alloc', mb: 100 });
  const grown = statsOf(child).usage.rss - before.rss;
  assert.ok(grown >= 90 * MB, `RSS grew ${(grown / MB).toFixed(1)} MB`);
  await ask(child, { op: 'spin', ms: 500 });
  const spent = statsOf(child).usage.cpuSeconds - before.cpuSeconds;
  assert.ok(spent >= 0.4, `CPU ${spent} s`);
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
  assert.equal(statsOf(child).usage, undefined, 'gone with the child');
});

test('round-robin hand-offs: per worker, and per server, match the connections made', { skip: OURS_ONLY, timeout: 30_000 }, async (t) => {
  const fx = startFixture(t, fixture('primary.js'));
  const { port } = await fx.waitFor('ready', { timeout: 15_000 });
  const requests = 20;
  for (let i = 0; i < requests; i++) {
    await new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent: false }, (res) => res.resume().on('end', resolve)).on('error', reject);
    });
  }
  // Each worker has answered its newconns by the time its responses arrived, save the last ones.
  let stats;
  await until(async () => {
    fx.child.kill('SIGUSR2');
    stats = (await fx.waitAll('stats', fx.all('stats').length + 1)).at(-1);
    return stats.workers.every((w) => w.unanswered === 0);
  }, { what: 'every hand-off answered' });
  assert.equal(stats.servers.length, 1);
  assert.equal(stats.servers[0].accepted, requests);
  assert.equal(stats.servers[0].waiting, 0);
  assert.equal(stats.workers.length, 2);
  assert.equal(stats.workers.reduce((sum, w) => sum + w.handed, 0), requests);
  assert.ok(stats.workers.every((w) => w.handed > 0), 'both workers got connections');
});
