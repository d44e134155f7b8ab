'use strict';
// What `npm pack` ships, and what a user sees when the native core is missing.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');

test('npm pack ships only what runs: entry points, types, lib/, the loader and the built core', { timeout: 60_000 }, () => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const out = execFileSync(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const files = JSON.parse(out)[0].files.map((f) => f.path).sort();
  const expected = [
    'LICENSE', 'README.md', 'package.json',
    'binding.d.ts', 'binding.js',
    'index.js', 'index.mjs', 'index.d.ts',
    'child_process.js', 'child_process.mjs', 'child_process.d.ts',
    'ipc.js', 'ipc.mjs', 'ipc.d.ts',
    ...fs.readdirSync(path.join(ROOT, 'lib')).map((f) => `lib/${f}`),
    ...fs.readdirSync(ROOT).filter((f) => f.endsWith('.node')),
  ].sort();
  assert.deepEqual(files, expected);
  assert.ok(files.some((f) => f.endsWith('.node')), 'the native core is in the package');
});

test('a missing native core is a clear error naming the fix, not a stack trace from the loader', () => {
  // A copy of the JavaScript without the loader and the .node file, as on an unsupported platform.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-nocore-'));
  try {
    fs.cpSync(path.join(ROOT, 'lib'), path.join(dir, 'lib'), { recursive: true });
    for (const f of ['index.js', 'child_process.js', 'package.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f));
    const run = spawnSync(process.execPath, ['-e', `
      try { require(${JSON.stringify(path.join(dir, 'child_process.js'))}); }
      catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`], { encoding: 'utf8' });
    const err = JSON.parse(run.stdout);
    assert.equal(err.code, 'ERR_RUST_CLUSTER_NATIVE_MISSING');
    assert.match(err.message, /npm install|npm run build/);
    assert.match(err.message, new RegExp(`${process.platform}-${process.arch}`));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
