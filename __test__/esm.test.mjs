// The ESM entry points (index.mjs, child_process.mjs), imported by package name from fixtures in
// fresh processes so no other test's cluster state leaks in.
import { test } from 'node:test';
import assert from 'node:assert';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

function run(fixture) {
  const file = fileURLToPath(new URL(`fixtures/esm/${fixture}`, import.meta.url));
  const { status, signal, stdout, stderr } = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 30_000 });
  return { status, signal, stdout, output: `${stdout}${stderr}` };
}

test("import 'rust-cluster' gives the cluster object and its members, in primary and worker", () => {
  const { status, signal, stdout, output } = run('cluster.mjs');
  assert.deepStrictEqual({ status, signal }, { status: 0, signal: null }, output);
  assert.match(stdout, /^worker ok$/m, output);
  assert.match(stdout, /^primary ok$/m, output);
});

test("import 'rust-cluster/child_process' gives Node's child_process with our fork", () => {
  const { status, signal, stdout, output } = run('child_process.mjs');
  assert.deepStrictEqual({ status, signal }, { status: 0, signal: null }, output);
  assert.match(stdout, /^child_process ok$/m, output);
});
