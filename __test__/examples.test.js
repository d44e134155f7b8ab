'use strict';
// The seed example (examples/parent.js + child.js) runs unmodified: parent and child keep
// exchanging "hello"/"hi" over the IPC channel.
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
// Node's own spawn runs the example's parent process (not the code under test).
const { spawn } = require('node:child_process');

const { reference } = require('./helpers/impl');
const { until } = require('./helpers/wait');

const examples = path.join(__dirname, '..', 'examples');

// In reference mode, a copy of the example that uses Node's child_process instead.
function exampleDir(t) {
  if (!reference) return examples;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-example-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const parent = fs.readFileSync(path.join(examples, 'parent.js'), 'utf8');
  const switched = parent.replace('require("rust-cluster/child_process")', 'require("child_process")');
  assert.notEqual(switched, parent, 'parent.js requires rust-cluster/child_process');
  fs.writeFileSync(path.join(dir, 'parent.js'), switched);
  fs.copyFileSync(path.join(examples, 'child.js'), path.join(dir, 'child.js'));
  return dir;
}

test('examples/parent.js and child.js exchange hello/hi', { timeout: 30_000 }, async (t) => {
  // Its own process group, so the example's child (which the parent never stops) dies with it.
  const parent = spawn(process.execPath, ['parent.js'], {
    cwd: exampleDir(t),
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  t.after(() => {
    try {
      process.kill(-parent.pid, 'SIGKILL');
    } catch {}
  });
  const lines = [];
  readline.createInterface({ input: parent.stdout }).on('line', (line) => lines.push(line));
  let exit;
  parent.on('exit', (code, signal) => { exit = { code, signal }; });

  // The child sends every 3 s; two full rounds take about 6 s.
  const expected = ['message from child: hello', 'message from parent: hi'];
  await until(() => lines.length >= 4 || exit, { timeout: 25_000, what: 'two hello/hi rounds' });
  assert.equal(exit, undefined, 'the parent exited early');
  assert.deepEqual(lines.slice(0, 4), [...expected, ...expected]);
});
