'use strict';
// Type-checks the fixture programs in fixtures/types with the repo's TypeScript against
// index.d.ts and child_process.d.ts, under the module settings users commonly have.
const { test } = require('node:test');
const assert = require('node:assert');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const fixtures = path.join(__dirname, 'fixtures', 'types');
const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');

// tsc is slow to start, so all configs are checked in parallel from the outset.
function typecheck(config) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tsc, '--noEmit', '--pretty', 'false', '-p', path.join(fixtures, config)], {
      cwd: root,
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, output }));
  });
}

const compiling = ['tsconfig.json', 'tsconfig.node10.json', 'tsconfig.bundler.json'];
const runs = new Map([...compiling, 'tsconfig.invalid.json'].map((config) => [config, typecheck(config)]));

test('program.rust.ts is program.node.ts with only the module names switched', () => {
  const node = fs.readFileSync(path.join(fixtures, 'program.node.ts'), 'utf8');
  const rust = fs.readFileSync(path.join(fixtures, 'program.rust.ts'), 'utf8');
  const switched = node
    .replace(/from 'cluster';/g, "from 'rust-cluster';")
    .replace(/from 'child_process';/g, "from 'rust-cluster/child_process';");
  assert.notStrictEqual(switched, node, 'program.node.ts no longer imports cluster/child_process');
  assert.strictEqual(rust, switched);
});

for (const config of compiling) {
  test(`fixtures compile with ${config}`, async () => {
    const { status, output } = await runs.get(config);
    assert.strictEqual(status, 0, output);
  });
}

test('invalid.ts fails exactly on the lines marked with their error codes', async () => {
  const source = fs.readFileSync(path.join(fixtures, 'invalid.ts'), 'utf8');
  const expected = source
    .split('\n')
    .flatMap((line, i) => [...line.matchAll(/\/\/ error (TS\d+)$/g)].map(([, code]) => `${i + 1} ${code}`));
  assert.ok(expected.length > 0);

  const { status, output } = await runs.get('tsconfig.invalid.json');
  assert.notStrictEqual(status, 0, 'invalid.ts compiled');
  const actual = [...output.matchAll(/invalid\.ts\((\d+),\d+\): error (TS\d+)/g)].map(([, line, code]) => `${line} ${code}`);
  assert.deepStrictEqual(actual.sort(), expected.sort(), output);
});
