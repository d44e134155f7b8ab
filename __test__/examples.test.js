'use strict';
// The seed example (examples/parent.js + child.js) runs unmodified: parent and child keep
// exchanging "hello"/"hi" over the IPC channel.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { reference } = require('./helpers/impl');
const { EXAMPLES, helloHi, HELLO_HI } = require('./helpers/seed');

// In reference mode, a copy of the example that uses Node's child_process instead.
function exampleDir(t) {
  if (!reference) return EXAMPLES;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-example-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const parent = fs.readFileSync(path.join(EXAMPLES, 'parent.js'), 'utf8');
  const switched = parent.replace('require("rust-cluster/child_process")', 'require("child_process")');
  assert.notEqual(switched, parent, 'parent.js requires rust-cluster/child_process');
  fs.writeFileSync(path.join(dir, 'parent.js'), switched);
  fs.copyFileSync(path.join(EXAMPLES, 'child.js'), path.join(dir, 'child.js'));
  return dir;
}

test('examples/parent.js and child.js exchange hello/hi', { timeout: 30_000 }, async (t) => {
  assert.deepEqual(await helloHi(t, exampleDir(t)), HELLO_HI);
});
