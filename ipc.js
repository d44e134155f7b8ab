'use strict';
// `require('rust-cluster/ipc')`: fork()'s message channel between unrelated processes, over a
// unix-domain socket (with handle passing) or TCP, with an API shaped like `net`. It has no
// equivalent in Node, so without the native core it throws ERR_RUST_CLUSTER_NATIVE_MISSING.
require('./lib/batching').arm();

module.exports = require('./lib/ipc');
