'use strict';
// `require('rust-cluster/child_process')`: Node's child_process with `fork` replaced by the
// Rust-backed one. Everything else is Node's own.
const { fork } = require('./lib/child');

require('./lib/child-send').install();

module.exports = { ...require('child_process'), fork };
