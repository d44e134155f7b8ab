'use strict';
// The primary's `cluster` where the platform has no Rust core: Node's own cluster object with
// rust-cluster's additions that mean something on it. Node's object itself, not a copy, because
// Node's primary keeps its state (settings, schedulingPolicy, workers) and emits its events on it.
const cluster = require('cluster');

// The core's value (src/lib.rs); __test__/fallback.test.js checks that they agree.
const SCHED_REUSEPORT = 3;

// Each worker's own SO_REUSEPORT socket needs the core: reuseport falls back to round-robin.
// Node's fork() calls cluster.setupPrimary() too, so this sees the policy before Node freezes it.
const nodeSetupPrimary = cluster.setupPrimary;
function setupPrimary(options) {
  if (cluster.schedulingPolicy === SCHED_REUSEPORT) cluster.schedulingPolicy = cluster.SCHED_RR;
  return nodeSetupPrimary.call(this, options);
}

// The name Node used before v6 (DEP0007); the seed still reads it.
Object.defineProperty(cluster.Worker.prototype, 'suicide', {
  configurable: true,
  get() {
    return this.exitedAfterDisconnect;
  },
});
Object.assign(cluster, { SCHED_REUSEPORT, setupPrimary, setupMaster: setupPrimary });

module.exports = cluster;
