'use strict';
// `require('rust-cluster/supervisor')`: run a server script in supervised cluster workers from a
// program that keeps its own primary. The `rust-cluster` command is this with signals and logs.
const { supervise, Supervisor } = require('./lib/supervisor');

module.exports = { supervise, Supervisor };
