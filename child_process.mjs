// ESM entry: the default export is the CommonJS module object, so `import` and `require` share it.
// ESM cannot export computed names, so Node's child_process exports are listed by hand;
// __test__/esm.test.mjs checks the list against Object.keys(require('child_process')).
import childProcess from './child_process.js';

export default childProcess;
export const {
  _forkChild,
  ChildProcess,
  exec,
  execFile,
  execFileSync,
  execSync,
  fork,
  spawn,
  spawnSync,
} = childProcess;
