'use strict';
// A forked child that loads rust-cluster sends the way the parent end does: the plain messages
// of one tick go out in one write, from a Rust writer on a duplicate of the channel fd, so many
// small process.send() calls cost one syscall. Node keeps everything else: all reading, handles,
// and the queue it holds while a sent handle awaits its ACK.
//
// The two writers never interleave bytes: ours takes a message only while Node has nothing
// queued or unwritten, and Node gets one only once ours is drained; a send that has to wait for
// our writer waits in order with every send after it. Disconnecting waits for the same drain.
// RUST_CLUSTER_CHILD_BATCHING=0 leaves process.send as Node made it.
const native = require('./native');
const { Outbox, validateMessage } = require('./outbox');
const { errors } = require('./errors');

const { EventKind } = native.binding;

const INSTALLED = Symbol.for('rust-cluster.childSend');

// Node's handle for the channel to our parent, if we have one.
function nodePipe() {
  const key = Object.getOwnPropertySymbols(process).find((s) => s.description === 'kChannelHandle');
  return key === undefined ? undefined : process[key];
}

// The channel's wire format, told by the per-format state Node keeps on its pipe.
function formatOf(pipe) {
  const names = Object.getOwnPropertySymbols(pipe).map((s) => s.description);
  if (names.includes('kJSONBuffer')) return 'json';
  if (names.includes('kMessageBuffer')) return 'advanced';
  return undefined;
}

function install() {
  if (process[INSTALLED] || process.env.RUST_CLUSTER_CHILD_BATCHING === '0' || !process.connected) return;
  const pipe = nodePipe();
  const format = pipe && formatOf(pipe);
  const usable = format && Number.isInteger(pipe.fd) && pipe.fd >= 0 && typeof pipe.writeQueueSize === 'number' &&
    typeof process._send === 'function' && typeof process._disconnect === 'function';
  if (!usable) return;
  process[INSTALLED] = true;

  const nodeSend = process._send;
  const nodeDisconnect = process._disconnect;
  const out = new Outbox();
  const id = native.binding.openWriter(pipe.fd, format);
  out.attach(id, format);
  // Sends that wait for our writer to drain, in order: arguments for Node's _send.
  const waiting = [];
  let draining = false;
  let disconnecting = false;
  let held = false;

  const nodeIdle = () => pipe.writeQueueSize === 0 && !process._handleQueue;
  const hold = (on) => {
    if (on === held) return;
    held = on;
    if (on) native.ref();
    else native.unref();
  };

  // Hands waiting sends to Node once nothing of ours is unwritten; then a pending disconnect.
  function drain() {
    if (draining) return;
    draining = true;
    try {
      while (waiting.length) {
        out.flush();
        if (!out.idle) return;
        nodeSend.apply(process, waiting.shift());
      }
    } finally {
      draining = false;
    }
    if (!out.idle) return;
    hold(false);
    if (disconnecting) finishDisconnect();
  }

  function finishDisconnect() {
    disconnecting = false;
    out.close();
    native.disown(id);
    hold(false);
    // Node drops its channel at EOF right after asking us; it then relies on this for 'disconnect'.
    if (process.channel) nodeDisconnect.call(process);
    else process.nextTick(() => process.emit('disconnect'));
  }

  out.onIdle = drain;
  out.onPending = () => hold(true);

  native.own(id, {
    _onNative(event) {
      if (event.kind === EventKind.Written) return out.written(event.count);
      if (event.kind !== EventKind.Disconnect) return;
      // The parent is gone: nothing queued can be delivered any more.
      const err = errors.ERR_IPC_CHANNEL_CLOSED();
      out.abandon(err);
      for (const [, , , callback] of waiting.splice(0)) if (typeof callback === 'function') process.nextTick(callback, err);
      if (disconnecting) finishDisconnect();
      else {
        native.disown(id);
        hold(false);
      }
    },
  });

  process._send = function send(message, handle, options, callback) {
    validateMessage(message);
    // Node's writes all come through here and wait for our batch, so a batch under way means
    // Node is still idle.
    if (waiting.length === 0 && handle == null && (out.batching || nodeIdle())) return out.push(message, callback);
    out.flush();
    if (waiting.length === 0 && out.idle) return nodeSend.call(this, message, handle, options, callback);
    waiting.push([message, handle, options, callback]);
    hold(true);
    return false;
  };

  process._disconnect = function disconnect() {
    out.flush();
    disconnecting = true;
    drain();
  };
}

module.exports = { install };
