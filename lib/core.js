'use strict';
// Which implementation rust-cluster runs on in this process: 'rust' (the native core), or 'node'
// (Node's own cluster and fork) where the platform has no core. Decided once, on first need (a
// primary's `cluster`, the first fork(), a child's first send), so that a program that loads
// rust-cluster only to spawn or exec never loads the core. RUST_CLUSTER_NATIVE=required makes a
// missing core an error instead, as soon as rust-cluster is loaded; RUST_CLUSTER_VERBOSE=1 says
// on stderr which one it is.
let implementation;

function decide() {
  try {
    require('./native');
    return { implementation: 'rust', note: 'on the Rust core' };
  } catch (err) {
    if (err.code !== 'ERR_RUST_CLUSTER_NATIVE_MISSING' || process.env.RUST_CLUSTER_NATIVE === 'required') throw err;
    const reason = String(err.cause?.message ?? err.message).split('\n')[0];
    return { implementation: 'node', note: `no native core for ${process.platform}-${process.arch} (${reason}): on Node's built-in cluster and child_process` };
  }
}

function active() {
  if (implementation === undefined) {
    const decision = decide();
    implementation = decision.implementation;
    if (process.env.RUST_CLUSTER_VERBOSE === '1') process.stderr.write(`rust-cluster[${process.pid}]: ${decision.note}\n`);
  }
  return implementation;
}

if (process.env.RUST_CLUSTER_NATIVE === 'required') active();

module.exports = { active };
