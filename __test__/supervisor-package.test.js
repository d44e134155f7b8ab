'use strict';
// rust-cluster/supervisor as a package entry: its ESM entry and its types.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { ROOT, FIXTURES } = require('./helpers/supervisor');

test("import 'rust-cluster/supervisor' gives the same module as require()", () => {
  const { status, stdout, stderr } = spawnSync(process.execPath, [path.join(FIXTURES, 'esm.mjs')], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(status, 0, stderr);
  assert.equal(stdout, 'supervisor esm ok\n');
});

test('supervisor.d.ts types a CommonJS and an ESM program', { timeout: 60_000 }, () => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const { status, stdout, stderr } = spawnSync(process.execPath, [tsc, '--noEmit', '--pretty', 'false', '-p', path.join(FIXTURES, 'types')], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(status, 0, stdout + stderr);
});
