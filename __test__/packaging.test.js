'use strict';
// What `npm pack` ships, and the layout napi-rs packages publish: the core for each target in a
// package of its own (npm/<target>/), listed in optionalDependencies, so that `npm install
// rust-cluster` gets the right core without compiling anything, and installs everywhere.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { ROOT, builtCore, pack, packCore, install } = require('./helpers/install');

const pkg = require('../package.json');

// Every file under `dir`, as paths relative to ROOT.
function filesUnder(dir) {
  return fs.readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(ROOT, path.join(entry.parentPath ?? entry.path, entry.name)));
}

// The files package.json's exports and bin point at.
function entryFiles() {
  const targets = [...Object.values(pkg.exports).flatMap((entry) => (typeof entry === 'string' ? [entry] : Object.values(entry))), ...Object.values(pkg.bin ?? {})];
  return targets.map((file) => path.normalize(file));
}

test('npm pack ships only what runs: the files exports and bin name, lib/ and the loader; no core (that is in the platform packages)', { timeout: 60_000 }, (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-pack-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const expected = new Set(['LICENSE', 'README.md', 'binding.d.ts', 'binding.js', ...entryFiles(), ...filesUnder('lib')]);
  assert.ok(expected.has('register.js') && expected.has('register.mjs') && expected.has('register.d.ts'), 'the preload is exported');
  assert.deepEqual(pack(ROOT, dir).files, [...expected].sort());
});

test('npm/ holds one package per napi target, as `napi create-npm-dirs` makes them, and optionalDependencies lists exactly those', { timeout: 60_000 }, (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-npm-dirs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
  const napi = path.join(ROOT, 'node_modules', '.bin', 'napi');
  execFileSync(napi, ['create-npm-dirs', '--cwd', dir], { stdio: 'ignore' });
  const targets = fs.readdirSync(path.join(dir, 'npm')).sort();
  assert.equal(targets.length, pkg.napi.targets.length);
  assert.deepEqual(fs.readdirSync(path.join(ROOT, 'npm')).sort(), targets);
  for (const target of targets) {
    for (const file of fs.readdirSync(path.join(dir, 'npm', target))) {
      assert.equal(fs.readFileSync(path.join(ROOT, 'npm', target, file), 'utf8'), fs.readFileSync(path.join(dir, 'npm', target, file), 'utf8'), `npm/${target}/${file}`);
    }
  }
  assert.deepEqual(pkg.optionalDependencies, Object.fromEntries(targets.map((target) => [`rust-cluster-${target}`, pkg.version])));
  assert.equal(pkg.os, undefined, 'no os restriction: it installs everywhere');
});

test("this machine's platform package ships the core, and an install with it runs on the core from node_modules", { timeout: 60_000 }, (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-core-pack-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const { target, files } = packCore(dir);
  assert.deepEqual(files, ['README.md', builtCore().file, 'package.json'].sort());

  const project = install(t, { core: true });
  const run = spawnSync(process.execPath, ['-e', `
    const cluster = require('rust-cluster');
    console.log(JSON.stringify({ implementation: cluster.implementation, addons: Object.keys(require.cache).filter((f) => f.endsWith('.node')) }));`], { cwd: project, encoding: 'utf8' });
  assert.deepEqual(JSON.parse(run.stdout), {
    implementation: 'rust',
    addons: [path.join(fs.realpathSync(project), 'node_modules', `rust-cluster-${target}`, builtCore().file)],
  }, run.stderr);
});
