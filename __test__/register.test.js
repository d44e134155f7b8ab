'use strict';
// The preload, rust-cluster/register: with `-r`, NODE_OPTIONS or `--import`, `cluster` and
// `child_process` resolve to rust-cluster in the program and in every child it forks, while
// rust-cluster's own files keep Node's built-ins. In reference mode the same programs run with no
// preload, on Node's built-ins, and must behave the same; tests of the preload's own work skip.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const Module = require('node:module');
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { reference } = require('./helpers/impl');
const { startFixture } = require('./helpers/fixture');

const ROOT = path.join(__dirname, '..');
const FIXTURES = path.join(__dirname, 'fixtures', 'register');
const PRELOAD_ONLY = reference && 'tests what the preload adds: there is none on Node';
// What the preload gives, or Node's own where there is no preload.
const ORIGIN = reference ? 'node' : 'rust-cluster';

const PRELOADS = {
  '-r': { execArgv: ['-r', 'rust-cluster/register'] },
  NODE_OPTIONS: { env: { NODE_OPTIONS: '--require rust-cluster/register' } },
  '--import': { execArgv: ['--import', 'rust-cluster/register'] },
};

function run(t, fixture, how) {
  return startFixture(t, path.join(FIXTURES, fixture), reference ? {} : PRELOADS[how]);
}

async function exitsCleanly(fixture) {
  assert.deepEqual(await fixture.exited, { code: 0, signal: null }, fixture.stderr);
}

for (const how of Object.keys(PRELOADS)) {
  test(`CommonJS program, preload by ${how}: require('cluster'), require('node:cluster') and both child_process spellings' fork are rust-cluster's; rust-cluster's own files get Node's`, { timeout: 20_000 }, async (t) => {
    const fx = run(t, 'cjs.js', how);
    const facts = await fx.waitFor('facts');
    assert.deepEqual(
      { cluster: facts.cluster, nodeCluster: facts.nodeCluster, fork: facts.fork, nodeFork: facts.nodeFork, spawn: facts.spawn },
      { cluster: ORIGIN, nodeCluster: ORIGIN, fork: ORIGIN, nodeFork: ORIGIN, spawn: 'node' },
    );
    assert.equal(facts.ownCluster, reference ? null : 'node');
    assert.equal(facts.addon, !reference, 'the native core is loaded in the primary');
    assert.equal((await fx.waitFor('echo')).message, 'ping');
    await exitsCleanly(fx);
  });
}

test("ES module program under --import: import cluster from 'node:cluster' and fork from 'node:child_process', default, named and namespace, are rust-cluster's", { timeout: 20_000 }, async (t) => {
  const fx = run(t, 'esm.mjs', '--import');
  const imports = await fx.waitFor('imports');
  assert.deepEqual(imports, {
    type: 'imports',
    cluster: ORIGIN,
    bareCluster: ORIGIN,
    clusterFork: ORIGIN,
    isPrimary: true,
    defaultFork: ORIGIN,
    fork: ORIGIN,
    namespaceFork: ORIGIN,
    spawn: 'node',
  });
  assert.equal((await fx.waitFor('echo')).message, 'ping');
  await exitsCleanly(fx);
});

test('ES module program under -r: imports resolve to rust-cluster where module.registerHooks exists (Node >= 22.15), to Node\'s on Node 20', { timeout: 20_000 }, async (t) => {
  const fx = run(t, 'esm.mjs', '-r');
  const imports = await fx.waitFor('imports');
  const expected = !reference && typeof Module.registerHooks === 'function' ? 'rust-cluster' : 'node';
  assert.deepEqual([imports.cluster, imports.fork, imports.namespaceFork], [expected, expected, expected]);
  assert.equal((await fx.waitFor('echo')).message, 'ping');
  await exitsCleanly(fx);
});

// Preloads named in a member's execArgv and NODE_OPTIONS.
const REGISTER = new Set(['rust-cluster/register', path.join(ROOT, 'register.js'), pathToFileURL(path.join(ROOT, 'register.mjs')).href]);
function preloadCount({ execArgv, nodeOptions }) {
  const tokens = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)];
  return tokens.filter((token) => REGISTER.has(token.replace(/^--(require|import)=/, ''))).length;
}

for (const how of Object.keys(PRELOADS)) {
  test(`preload by ${how}: a cluster worker and forked children get it, once, even when a fork gives its own execArgv or env`, { skip: PRELOAD_ONLY, timeout: 20_000 }, async (t) => {
    const fx = run(t, 'family.js', how);
    const members = Object.fromEntries((await fx.waitAll('member', 5)).map((m) => [m.role, m]));
    assert.deepEqual(Object.keys(members).sort(), ['bare', 'default', 'own-execArgv', 'primary', 'worker']);
    for (const [role, member] of Object.entries(members)) {
      assert.equal(preloadCount(member), 1, `${role} loads the preload once: ${JSON.stringify(member)}`);
      assert.equal(member.addon, true, `${role} has the native core loaded`);
      // A worker's `cluster` is Node's own worker side; everyone else's is rust-cluster's.
      assert.equal(member.cluster, role === 'worker' ? 'node' : 'rust-cluster', role);
      assert.equal(member.fork, 'rust-cluster', role);
    }
    const injected = how === '--import' ? ['--import', pathToFileURL(path.join(ROOT, 'register.mjs')).href] : ['--require', path.join(ROOT, 'register.js')];
    // NODE_OPTIONS reaches the child that keeps its parent's environment: nothing to add there.
    assert.deepEqual(members['own-execArgv'].execArgv, how === 'NODE_OPTIONS' ? ['--no-warnings'] : [...injected, '--no-warnings']);
    assert.deepEqual(members.bare.execArgv, injected);
    assert.deepEqual(members.default.execArgv, members.primary.execArgv, 'a default fork keeps the parent\'s execArgv as it is');
    await exitsCleanly(fx);
  });
}

test('a program that uses child_process but never forks runs as without the preload and never loads the native core', { timeout: 20_000 }, async (t) => {
  const fx = run(t, 'plain.js', '-r');
  assert.deepEqual(await fx.waitFor('plain'), { type: 'plain', echoed: 'hi', status: 3, addon: false, mapped: false });
  await exitsCleanly(fx);
});
