'use strict';
// `require('rust-cluster')`: a drop-in for `require('cluster')`. In the primary it is the
// Rust-backed implementation, or Node's own with rust-cluster's additions where the platform has
// no core (lib/core.js, lib/fallback.js). In a worker it is Node's own worker side, which the
// primary speaks to over Node's protocol (NODE_UNIQUE_ID), so `cluster.worker` and `isWorker` are
// exactly Node's.
const nodeCluster = require('cluster');
const core = require('./lib/core');

// A worker (or any forked child) that loads us batches its own sends: lib/batching.js.
require('./lib/batching').arm();

function primary() {
  return core.active() === 'rust' ? require('./lib/cluster') : require('./lib/fallback');
}

const cluster = nodeCluster.isWorker ? nodeCluster : primary();
// 'rust' or 'node': which implementation rust-cluster runs on in this process.
Object.defineProperty(cluster, 'implementation', { configurable: true, enumerable: true, get: core.active });

module.exports = cluster;
