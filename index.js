'use strict';
// `require('rust-cluster')`: a drop-in for `require('cluster')`. In the primary it is the Rust-backed
// implementation; in a worker it is Node's own worker side, which the Rust primary speaks to over
// Node's protocol (NODE_UNIQUE_ID), so `cluster.worker` and `isWorker` are exactly Node's.
const nodeCluster = require('cluster');

// A worker (or any forked child) that loads us batches its own sends: lib/child-send.js.
require('./lib/child-send').install();

module.exports = nodeCluster.isWorker ? nodeCluster : require('./lib/cluster');
