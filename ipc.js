'use strict';
// `require('rust-cluster/ipc')`: fork()'s message channel between unrelated processes, over a
// unix-domain socket (with handle passing) or TCP, with an API shaped like `net`.
require('./lib/child-send').install();

module.exports = require('./lib/ipc');
