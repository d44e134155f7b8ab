'use strict';
// `require('rust-cluster/child_process')`: Node's child_process with `fork` replaced by the
// Rust-backed one (Node's own where the platform has no core: lib/core.js). Everything else is
// Node's own. The core is loaded by the first fork(), so a program that only spawns or execs
// never loads it.
const childProcess = require('child_process');
const core = require('./lib/core');

require('./lib/batching').arm();

let implementationFork;
function fork(modulePath, args, options) {
  implementationFork ??= core.active() === 'rust' ? require('./lib/child').fork : childProcess.fork;
  return implementationFork(modulePath, args, options);
}

module.exports = { ...childProcess, fork };
