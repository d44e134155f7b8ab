'use strict';
// The native core and the one place its events enter JavaScript.
//
// Each JavaScript environment (the main thread, every worker_thread) loads this file once and
// gets its own runtime in the core (`init`). The reactor thread queues this environment's events
// and wakes us at most once per batch; we drain them all and hand each to the object that owns
// its id. Node's event loop is kept alive by a plain timer that
// is ref'd exactly while something (a child process, an open channel) wants the loop alive.

const fs = require('fs');
const { errors } = require('./errors');

function load() {
  try {
    return require('../binding.js');
  } catch (err) {
    const hint = errors.ERR_RUST_CLUSTER_NATIVE_MISSING(`${process.platform}-${process.arch}`);
    hint.cause = err;
    throw hint;
  }
}

const binding = load();
const owners = new Map();

let refs = 0;
const keepAlive = setInterval(() => {}, 1 << 30);
keepAlive.unref();

function ref() {
  if (refs++ === 0) keepAlive.ref();
}

function unref() {
  if (--refs === 0) keepAlive.unref();
}

function own(id, owner) {
  owners.set(id, owner);
}

function disown(id) {
  owners.delete(id);
}

function dispatch() {
  for (const event of binding.drain()) {
    const owner = owners.get(event.id);
    if (owner) owner._onNative(event);
    // Nobody will wrap it: a received fd must not stay open in this process.
    else if (event.fd != null) fs.closeSync(event.fd);
  }
}

binding.init(dispatch);

module.exports = { binding, ref, unref, own, disown };
