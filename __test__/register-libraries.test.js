'use strict';
// Libraries from npm that call `cluster` themselves, run unchanged under the preload (`-r` and
// `--import`): throng forks and supervises the workers, @socket.io/sticky passes each connection
// from the primary to a worker as a handle. Their primary runs on rust-cluster and the native
// core; in reference mode the same programs run with no preload, on Node's cluster.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { reference } = require('./helpers/impl');
const { startFixture } = require('./helpers/fixture');
const seedHelpers = require('./helpers/seed');

const FIXTURES = path.join(__dirname, 'fixtures', 'register');
const ORIGIN = reference ? 'node' : 'rust-cluster';

// GET / → the pid in the answer's JSON body.
const requestPid = (port) => seedHelpers.requestPid(port, { parse: (body) => JSON.parse(body).pid });

// Requests until every one of `pids` has answered (at most 100 requests); returns those that did.
async function answeredBy(port, pids) {
  const seen = new Set();
  for (let i = 0; i < 100 && seen.size < pids.length; i++) seen.add(await requestPid(port));
  return [...seen].sort();
}

for (const flag of ['-r', '--import']) {
  const execArgv = reference ? [] : [flag, 'rust-cluster/register'];

  test(`throng under ${flag}: its primary is rust-cluster's with the native core, its two workers serve HTTP`, { timeout: 30_000 }, async (t) => {
    const fx = startFixture(t, path.join(FIXTURES, 'throng.js'), { execArgv });
    const workers = await fx.waitAll('worker', 2);
    const primary = await fx.waitFor('primary');
    assert.equal(primary.cluster, ORIGIN, "the primary's require('cluster')");
    assert.equal(primary.workers, 2, "throng's workers are in the primary's cluster.workers");
    assert.equal(primary.addon, !reference, 'the native core is loaded in the primary');
    for (const worker of workers) assert.equal(worker.addon, !reference, `worker ${worker.id} sends through the native core`);
    assert.equal(workers[0].port, workers[1].port, 'one shared port');
    const pids = workers.map((w) => w.pid).sort();
    assert.deepEqual(await answeredBy(workers[0].port, pids), pids);
  });

  test(`@socket.io/sticky under ${flag}: the primary hands each connection to a worker as a handle, through rust-cluster`, { timeout: 30_000 }, async (t) => {
    const fx = startFixture(t, path.join(FIXTURES, 'sticky.js'), { execArgv });
    const workers = await fx.waitAll('worker', 2);
    const primary = await fx.waitFor('primary');
    assert.equal(primary.cluster, ORIGIN, "the primary's require('cluster')");
    assert.equal(primary.addon, !reference, 'the native core is loaded in the primary');
    assert.equal(primary.workers, 2);
    const pids = workers.map((w) => w.pid).sort();
    assert.deepEqual(await answeredBy(primary.port, pids), pids);
  });
}
