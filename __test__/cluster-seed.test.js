'use strict';
// The project's origin document: examples/cluster.js (the seed's master/worker demo, requiring
// rust-cluster) must behave as it does on Node's cluster: fork one worker per CPU, log their
// events, exchange messages after 3 s, serve HTTP from every worker and re-fork a worker that dies.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { reference } = require('./helpers/impl');
const { EXAMPLES, numCPUs, runSeed, writeSeed, requestUntil, portFree, freePort, waitForWorkers, waitForMessages } = require('./helpers/seed');

const ROOT = path.join(__dirname, '..');
// In reference mode require('rust-cluster') is redirected to Node's cluster by a preload.
const PRELOAD = reference ? ['-r', path.join(__dirname, 'fixtures', 'cluster', 'reference-alias.js')] : [];
const run = (t, file) => runSeed(t, file, { execArgv: PRELOAD, cwd: ROOT });

test('seed on a free port: lifecycle logs, messages after 3 s, HTTP from every worker, a dead worker is replaced', { timeout: 30_000 }, async (t) => {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-seed-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const requireLine = reference ? "require('cluster')" : `require(${JSON.stringify(ROOT)})`;
  const seed = run(t, writeSeed(dir, { requireLine, port }));
  const pids = await waitForWorkers(seed, port);

  const answered = await requestUntil(port, (seen) => seen.size >= Math.min(2, numCPUs));
  for (const pid of answered) assert.ok(pids.includes(pid), `pid ${pid} is one of the workers`);

  await waitForMessages(seed);

  // A killed worker is logged and replaced by worker numCPUs + 1 on the same port.
  process.kill(pids[0], 'SIGKILL');
  await seed.waitLine('[master] exit worker1 died, try to fork a new worker.');
  const replacement = numCPUs + 1;
  await seed.waitLine(`[master] fork: worker${replacement}`);
  const [, newPid] = await seed.waitLine(new RegExp(`^\\[master\\] listening: worker${replacement},pid:(\\d+), address:null:${port}$`));
  assert.ok((await requestUntil(port, (seen) => seen.has(Number(newPid)))).has(Number(newPid)), 'the replacement serves requests');
});

test('literal examples/cluster.js on port 5000: workers listen and serve HTTP', { timeout: 20_000 }, async (t) => {
  if (!(await portFree(5000))) return t.skip('port 5000 is in use on this machine');
  const seed = run(t, path.join(EXAMPLES, 'cluster.js'));
  const pids = await waitForWorkers(seed, 5000);
  const answered = await requestUntil(5000, (seen) => seen.size >= Math.min(2, numCPUs));
  for (const pid of answered) assert.ok(pids.includes(pid), `pid ${pid} is one of the workers`);
});
