'use strict';
// A platform with no core: rust-cluster installed from its packed tarball without the platform
// package (as on macOS, Windows, or an architecture nobody built). `rust-cluster`,
// `rust-cluster/child_process` and the preload give Node's own cluster and fork with the
// package's additions, the seed's examples run on them, `rust-cluster/ipc` is a clear error, and
// RUST_CLUSTER_NATIVE=required makes a missing core one too. These run Node's built-ins in both
// modes, so they are the same with RC_REFERENCE=node.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { startFixture } = require('./helpers/fixture');
const { install } = require('./helpers/install');
const { runSeed, writeSeed, freePort, requestUntil, waitForWorkers, waitForMessages, numCPUs, helloHi, HELLO_HI, EXAMPLES } = require('./helpers/seed');

const FALLBACK = path.join(__dirname, 'fixtures', 'register', 'fallback.js');

// `node -e script` in `cwd`: its exit status, stdout and stderr.
function node(cwd, script, { env = {}, execArgv = [] } = {}) {
  const { status, stdout, stderr } = spawnSync(process.execPath, [...execArgv, '-e', script], { cwd, env: { ...process.env, ...env }, encoding: 'utf8' });
  return { status, stdout, stderr };
}

// What requiring `id` throws in `cwd`, as { code, message }, or null.
function requireError(cwd, id, options) {
  const { stdout } = node(cwd, `try { require(${JSON.stringify(id)}); console.log('null'); } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`, options);
  return JSON.parse(stdout);
}

test("without a core, require('rust-cluster') is Node's cluster with the additions: implementation 'node', reuseport falls back to round-robin, worker.suicide; fork is Node's", { timeout: 30_000 }, async (t) => {
  const project = install(t, { core: false });
  for (const preloaded of [false, true]) {
    const fx = startFixture(t, FALLBACK, { cwd: project, ...(preloaded && { execArgv: ['-r', 'rust-cluster/register'], env: { RC_PRELOADED: '1' } }) });
    const modules = await fx.waitFor('modules');
    assert.deepEqual(modules, { type: 'modules', implementation: 'node', nodeCluster: true, SCHED_REUSEPORT: 3, addon: false }, `preloaded: ${preloaded}`);
    assert.equal((await fx.waitFor('echo')).message, 'ping');
    const listening = await fx.waitFor('listening');
    assert.equal(listening.policy, listening.rr, 'the policy is round-robin');
    assert.deepEqual(await fx.waitFor('exit'), { type: 'exit', suicide: true, exitedAfterDisconnect: true });
    assert.deepEqual(await fx.exited, { code: 0, signal: null }, fx.stderr);
    assert.equal(fx.stderr, '', 'nothing on stderr unless asked');
  }
});

test("the fallback's SCHED_REUSEPORT is the core's", (t) => {
  const project = install(t, { core: false });
  const { stdout } = node(project, "console.log(require('rust-cluster').SCHED_REUSEPORT)");
  assert.equal(Number(stdout), require('../lib/native').binding.SCHED_REUSEPORT);
});

test('without a core, rust-cluster/ipc and RUST_CLUSTER_NATIVE=required are ERR_RUST_CLUSTER_NATIVE_MISSING, naming the platform and the fix', (t) => {
  const project = install(t, { core: false });
  const required = { env: { RUST_CLUSTER_NATIVE: 'required' } };
  const errors = [
    requireError(project, 'rust-cluster/ipc'),
    requireError(project, 'rust-cluster', required),
    requireError(project, 'rust-cluster/child_process', required),
    requireError(project, 'cluster', { ...required, execArgv: ['-r', 'rust-cluster/register'] }),
  ];
  for (const err of errors) {
    assert.equal(err?.code, 'ERR_RUST_CLUSTER_NATIVE_MISSING');
    assert.match(err.message, new RegExp(`${process.platform}-${process.arch}`));
    assert.match(err.message, /npm install/);
  }
  assert.equal(requireError(project, 'rust-cluster'), null, 'without RUST_CLUSTER_NATIVE=required it falls back');
});

test('RUST_CLUSTER_VERBOSE=1 says on one stderr line which implementation runs, with the core and without', (t) => {
  const script = "require('rust-cluster').isPrimary; require('rust-cluster/child_process')";
  for (const core of [true, false]) {
    const project = install(t, { core });
    const verbose = node(project, script, { env: { RUST_CLUSTER_VERBOSE: '1' } });
    const lines = verbose.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, verbose.stderr);
    assert.match(lines[0], core ? /^rust-cluster\[\d+\]: on the Rust core$/ : /^rust-cluster\[\d+\]: no native core for .*: on Node's built-in cluster and child_process$/);
    assert.equal(node(project, script).stderr, '');
  }
});

test('the seed examples run on the fallback: examples/cluster.js (lifecycle, messages, HTTP from every worker) and parent.js + child.js', { timeout: 60_000 }, async (t) => {
  const project = install(t, { core: false });
  const port = await freePort();
  const seed = runSeed(t, writeSeed(project, { requireLine: "require('rust-cluster')", port }), { cwd: project, env: { ...process.env, RUST_CLUSTER_VERBOSE: '1' } });
  const pids = await waitForWorkers(seed, port);
  const answered = await requestUntil(port, (seen) => seen.size >= Math.min(2, numCPUs));
  for (const pid of answered) assert.ok(pids.includes(pid), `pid ${pid} is one of the workers`);
  await waitForMessages(seed);
  assert.match(seed.stderr, new RegExp(`^rust-cluster\\[${seed.pid}\\]: no native core`, 'm'), 'the master runs on the fallback');

  for (const file of ['parent.js', 'child.js']) fs.copyFileSync(path.join(EXAMPLES, file), path.join(project, file));
  assert.deepEqual(await helloHi(t, project), HELLO_HI);
});
