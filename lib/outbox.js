'use strict';
// The sending half of a Rust channel: messages serialized here and written in one batch per
// tick, send callbacks called once the core reports their bytes written, and Node's
// backpressure hint. Used by the parent end of every channel (endpoint.js) and by a child's own
// process.send (child-send.js).
const { binding } = require('./native');
const serialization = require('./serialization');
const { errors, errnoException } = require('./errors');

// Node's send() returns false once this much is queued and unwritten.
const HIGH_WATER = 128 * 1024;
// Above this much pending in one tick, write now rather than at the end of the tick.
const BATCH_LIMIT = 64 * 1024;

// Node's own checks on a message, thrown synchronously from send().
function validateMessage(message) {
  if (message === undefined) throw errors.ERR_MISSING_ARGS('message');
  const type = typeof message;
  if (type !== 'object' && type !== 'string' && type !== 'number' && type !== 'boolean') {
    throw errors.ERR_INVALID_ARG_TYPE('message', 'one of type string, object, number, or boolean', message);
  }
}

// Outboxes with a batch waiting for the end of the tick. Node writes each send at once, so a send
// made before process.exit() leaves the process; ours are written before it goes too.
const batching = new Set();
process.on('exit', () => {
  for (const outbox of batching) outbox.flush();
});

class Outbox {
  constructor() {
    this.id = 0;
    this.codec = serialization.json;
    // Frames and callbacks of this tick, then chunks the core has not finished writing.
    this._batch = [];
    this._batchSize = 0;
    this._batchCallbacks = [];
    this._flushScheduled = false;
    // One closure for every tick's flush, not one per tick.
    this._flushAtTickEnd = () => this.flush();
    this._submitted = 0;
    this._queued = 0;
    this._unwritten = [];
    // Called when a write leaves bytes queued in the core, and when everything has been written.
    this.onPending = null;
    this.onIdle = null;
  }

  attach(id, serializationMode) {
    this.id = id;
    this.codec = serialization[serializationMode];
  }

  get idle() {
    return this._batch.length === 0 && this._queued === 0;
  }

  // Messages of this tick are waiting for the flush.
  get batching() {
    return this._batch.length !== 0;
  }

  // Serializes `message` (throwing as Node does) into this tick's batch; returns Node's hint.
  push(message, callback) {
    const frame = this.codec.encode(message);
    const size = this.codec.size(frame);
    // A frame that would take the batch past the limit goes in a batch of its own: joining
    // large frames would copy them all once more. So does a lent one, written before the next
    // encode can overwrite it.
    const lent = this.codec.lent(frame);
    if (this._batchSize !== 0 && (lent || this._batchSize + size > BATCH_LIMIT)) this.flush();
    this._batch.push(frame);
    this._batchSize += size;
    if (typeof callback === 'function') this._batchCallbacks.push(callback);
    if (lent || this._batchSize >= BATCH_LIMIT) this.flush();
    else if (!this._flushScheduled) {
      this._flushScheduled = true;
      batching.add(this);
      process.nextTick(this._flushAtTickEnd);
    }
    return this._queued + this._batchSize < HIGH_WATER;
  }

  flush() {
    this._flushScheduled = false;
    batching.delete(this);
    if (this._batch.length === 0 || this.id === 0) return;
    const data = this.codec.join(this._batch);
    const frames = this._batch.length;
    const callbacks = this._batchCallbacks;
    // The arrays are kept for the next batch; callbacks go on with the chunk, when there are any.
    this._batch.length = 0;
    this._batchSize = 0;
    if (callbacks.length !== 0) this._batchCallbacks = [];
    this._submit(binding.write(this.id, data, frames), callbacks);
  }

  // Writes a `NODE_HANDLE` frame carrying a duplicate of `fd`, after everything batched before it.
  // Returns the core's answer: bytes still queued, or a negative errno.
  writeHandle(message, fd, callback) {
    this.flush();
    const result = binding.writeHandle(this.id, this.codec.encode(message), fd);
    this._submit(result, typeof callback === 'function' ? [callback] : []);
    return result;
  }

  // Node's backpressure hint for what is already submitted.
  underHighWater() {
    return this._queued < HIGH_WATER;
  }

  _submit(result, callbacks) {
    if (result < 0) {
      // Refused: the core counted no chunk, so neither do we.
      const err = result === -32 ? errors.ERR_IPC_CHANNEL_CLOSED() : errnoException(-result, 'write');
      for (const callback of callbacks) process.nextTick(callback, err);
      return;
    }
    this._submitted++;
    this._queued = result;
    if (result > 0) this.onPending?.();
    if (callbacks.length) this._unwritten.push({ chunk: this._submitted, callbacks });
    if (result === 0) this.written(this._submitted);
  }

  // The core has written `completed` chunks in full since the channel opened.
  written(completed) {
    if (completed >= this._submitted) this._queued = 0;
    while (this._unwritten.length && this._unwritten[0].chunk <= completed) {
      for (const callback of this._unwritten.shift().callbacks) process.nextTick(callback, null);
    }
    if (this.idle) this.onIdle?.();
  }

  // Last attempt to write, then EOF for the peer.
  close() {
    this.written(binding.close(this.id));
  }

  // The channel is gone: every callback not yet called gets `err`, nothing more is sent.
  abandon(err) {
    const unsent = { callbacks: this._batchCallbacks.splice(0) };
    this._batch = [];
    this._batchSize = 0;
    for (const { callbacks } of [...this._unwritten.splice(0), unsent]) {
      for (const callback of callbacks) process.nextTick(callback, err);
    }
  }
}

module.exports = { Outbox, validateMessage };
