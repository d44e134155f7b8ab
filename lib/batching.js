'use strict';
// A forked child that loads rust-cluster batches its process.send() through the core
// (child-send.js) from its first send on, so a child that loads rust-cluster only to spawn or
// exec, or never sends, does not load the core.
const core = require('./core');

const ARMED = Symbol.for('rust-cluster.batching');

// RUST_CLUSTER_CHILD_BATCHING=0 turns batching off (child-send.js), so the core is not loaded for it.
function arm() {
  if (process[ARMED] || typeof process._send !== 'function' || process.env.RUST_CLUSTER_CHILD_BATCHING === '0') return;
  process[ARMED] = true;
  const nodeSend = process._send;
  process._send = function send(...args) {
    process._send = nodeSend;
    if (core.active() === 'rust') require('./child-send').install();
    return process._send.apply(this, args);
  };
}

module.exports = { arm };
