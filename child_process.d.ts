// Types for `require('rust-cluster/child_process')`: Node's child_process with `fork` replaced by
// rust-cluster's. Our `fork` takes the same arguments and returns an object with every member of
// `ChildProcess` (it is not an `instanceof ChildProcess`, which types cannot express), so
// @types/node's declarations describe this module as it is.
export * from 'child_process';
