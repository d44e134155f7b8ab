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

const { EventKind } = binding;

// One event of the core, from its four slots (lib.rs's drain lists them).
class NativeEvent {
  constructor(kind, id, payload, extra) {
    this.kind = kind;
    this.id = id;
    this.text = typeof payload === 'string' ? payload : undefined;
    this.data = Buffer.isBuffer(payload) ? payload : undefined;
    this.ends = kind === EventKind.Messages ? extra : undefined;
    this.fd = kind === EventKind.Handle ? extra : undefined;
    this.count = kind === EventKind.Written ? payload : undefined;
    this.code = kind === EventKind.Exit ? payload : undefined;
    this.signal = kind === EventKind.Exit ? extra : undefined;
  }
}

// The core calls this with the events' slots as arguments when this thread read them itself (one
// array of them for a long batch), and with none when the reactor thread queued them.
function dispatch(...slots) {
  const flat = slots.length > 1 ? slots : slots.length === 1 ? slots[0] : binding.drain();
  for (let i = 0; i < flat.length; i += 4) {
    const event = new NativeEvent(flat[i], flat[i + 1], flat[i + 2], flat[i + 3]);
    const owner = owners.get(event.id);
    if (owner) owner._onNative(event);
    // Nobody will wrap it: a received fd must not stay open in this process.
    else if (event.fd != null) fs.closeSync(event.fd);
  }
}

binding.init(dispatch);

module.exports = { binding, ref, unref, own, disown };
