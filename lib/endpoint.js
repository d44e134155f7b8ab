'use strict';
// The message-channel half of a ChildProcess, shared with the channels of `rust-cluster/ipc`.
//
// The channel itself is in Rust; this class keeps Node's API over it. Outgoing messages go
// through an Outbox (one write per tick); incoming ones arrive in batches and are emitted one at
// a time, in order. Subclasses hook `_onExit`, `_onInternal` and `_maybeClose`.
const EventEmitter = require('events');
const fs = require('fs');
const native = require('./native');

const { binding } = native;
const { EventKind } = binding;
const serialization = require('./serialization');
const handles = require('./handles');
const { Outbox, validateMessage } = require('./outbox');
const { errors, errnoException } = require('./errors');
// Default limit on one incoming message; `maxMessageSize` changes it (README: Reliability).
const DEFAULT_MAX_MESSAGE = 512 * 1024 * 1024;

class Control extends EventEmitter {
  constructor(child) {
    super();
    this._child = child;
  }

  ref() {
    this._child._setChannelRef(true);
  }

  unref() {
    this._child._setChannelRef(false);
  }

  // The number of the parent's end in this process, as Node reports it; the core owns the fd.
  get fd() {
    const fd = this._child._id === 0 ? -1 : binding.channelFd(this._child._id);
    return fd < 0 ? undefined : fd;
  }
}

// Anything in the inbox that is not a plain message, by the core's EventKind. Decoded messages go
// in as they are (JSON and V8 deserialization never produce a Notice), which saves a wrapper
// object per message.
class Notice {
  constructor(kind, value) {
    this.kind = kind;
    this.value = value;
  }
}

const undecodable = (error, raw) => new Notice(EventKind.Error, { error, raw });

class Endpoint extends EventEmitter {
  constructor() {
    super();
    this.connected = false;
    this.channel = undefined;
    this._id = 0;
    this._codec = serialization.json;
    this._channelRef = false;
    this._out = new Outbox();
    // Per handle sent and not yet ACKed: the handle of a socket handed over without keepOpen,
    // closed once the peer has its copy (undefined for other handles).
    this._handlesInFlight = [];
    // Incoming: decoded items waiting to be emitted, one per step, in order.
    this._inbox = [];
    this._inboxAt = 0;
    this._emitInbox = () => this._emitInboxNow();
    this._pumping = false;
    this._waitingForHandle = false;
    this._gone = false;
    this._socketLists = new handles.ReceivedSockets((reply) => this.connected && this.send(reply));
    // Per server key: the sockets sent from that server (see handles.SentSockets).
    this._sentSockets = new Map();
  }

  // Binds this object to native channel `id`, open and ref'd.
  _attach(id, serializationMode) {
    this._id = id;
    this._codec = serialization[serializationMode];
    this._out.attach(id, serializationMode);
    this.connected = true;
    this.channel = new Control(this);
    native.own(id, this);
    this._setChannelRef(true);
  }

  get _channel() {
    return this.channel;
  }

  send(message, handle, options, callback) {
    if (typeof handle === 'function') {
      callback = handle;
      handle = undefined;
      options = undefined;
    } else if (typeof options === 'function') {
      callback = options;
      options = undefined;
    } else if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw errors.ERR_INVALID_ARG_TYPE('options', 'of type object', options);
    }
    validateMessage(message);
    const outgoing = handle === undefined || handle === null ? null : handles.describeOutgoing(handle);
    if (!this.connected) {
      const err = errors.ERR_IPC_CHANNEL_CLOSED();
      if (typeof callback === 'function') process.nextTick(callback, err);
      else process.nextTick(() => this.emit('error', err));
      return false;
    }
    if (outgoing) return this._sendHandle(message, handle, outgoing, options, callback);
    return this._out.push(message, callback);
  }

  _sendHandle(message, handle, { type, fd, fields }, options, callback) {
    const envelope = { cmd: 'NODE_HANDLE', type, msg: message, ...fields };
    if (fd === undefined) {
      // A handle with no fd (closed, not yet bound): Node's peer would NACK it; report it now.
      const err = errnoException(9, 'write');
      if (typeof callback === 'function') process.nextTick(callback, err);
      else process.nextTick(() => this.emit('error', err));
      return false;
    }
    const keepOpen = Boolean(options?.keepOpen);
    const raw = type === 'net.Socket' ? this._detachSocket(handle, envelope.key, keepOpen) : undefined;
    if (this._out.writeHandle(envelope, fd, callback) >= 0) this._handlesInFlight.push(raw);
    else raw?.close();
    return this._out.underHighWater();
  }

  // As Node hands over a socket: its server counts it through the receiver from now on, and
  // unless kept open the socket object lets go of its handle, closed once the peer has its copy.
  // Returns that handle. (Node only drops what the handle still reads; stopping the reading keeps
  // it for the receiver.)
  _detachSocket(socket, key, keepOpen) {
    const { server } = socket;
    if (server) {
      let list = this._sentSockets.get(key);
      if (list === undefined) {
        list = new handles.SentSockets(this, key);
        this._sentSockets.set(key, list);
        server._setupWorker(list);
      }
      if (!keepOpen) server._connections--;
    }
    if (keepOpen) return undefined;
    const raw = socket._handle;
    raw.readStop?.();
    raw.onread = () => {};
    socket._handle = null;
    socket.setTimeout(0);
    return raw;
  }

  disconnect() {
    if (!this.connected) {
      this.emit('error', errors.ERR_IPC_DISCONNECTED());
      return;
    }
    this._out.flush();
    this.connected = false;
    // As Node: handles still waiting for their ACK, and what is queued behind them, go first.
    if (this._handlesInFlight.length === 0) this._close();
  }

  _close() {
    this._out.close();
    this._channelGone();
  }

  _channelGone() {
    if (this._gone) return;
    this._gone = true;
    this.connected = false;
    this.channel = null;
    this._setChannelRef(false);
    this._out.abandon(errors.ERR_IPC_CHANNEL_CLOSED());
    for (const raw of this._handlesInFlight.splice(0)) raw?.close();
    process.nextTick(() => {
      this.emit('disconnect');
      this._maybeClose();
    });
  }

  _setChannelRef(on) {
    if (on && !this.connected) return;
    if (on === this._channelRef) return;
    this._channelRef = on;
    if (on) native.ref();
    else native.unref();
  }

  _onNative(event) {
    switch (event.kind) {
      case EventKind.Messages:
        this._codec.decode(event.text ?? event.data, event.ends, this._inbox, undecodable);
        break;
      case EventKind.Handle:
        this._inbox.push(new Notice(EventKind.Handle, { handleFrame: event.text ?? event.data, fd: event.fd }));
        break;
      case EventKind.Written:
        this._out.written(event.count);
        return;
      case EventKind.Acked:
      case EventKind.Lost: {
        this._handlesInFlight.shift()?.close();
        if (event.kind === EventKind.Lost) {
          process.emitWarning('Handle did not reach the receiving process correctly', 'SentHandleNotReceivedWarning');
        }
        if (!this.connected && this._handlesInFlight.length === 0) this._close();
        return;
      }
      case EventKind.Error:
      case EventKind.Oversized:
        this._inbox.push(new Notice(event.kind, { error: errors.ERR_IPC_MESSAGE(event.text) }));
        break;
      default:
        this._inbox.push(new Notice(event.kind, event));
    }
    this._pump();
  }

  // Emits queued items in order, one at a time, as Node emits each message on its own tick. A
  // listener that throws does not lose the rest: they are picked up on the next tick.
  _pump() {
    if (this._pumping || this._waitingForHandle) return;
    this._pumping = true;
    process.nextTick(this._emitInbox);
  }

  // The inbox's tick (one closure per endpoint, made in the constructor).
  _emitInboxNow() {
    this._pumping = false;
    try {
      while (this._inboxAt < this._inbox.length && !this._waitingForHandle) {
        const item = this._inbox[this._inboxAt];
        this._inbox[this._inboxAt++] = undefined;
        this._deliver(item);
      }
    } finally {
      if (this._inboxAt === this._inbox.length) {
        this._inbox = [];
        this._inboxAt = 0;
      } else {
        this._pump();
      }
    }
  }

  _deliver(item) {
    if (!(item instanceof Notice)) return this._emitMessage(item, undefined);
    switch (item.kind) {
      case EventKind.Handle:
        return this._receiveHandle(item.value);
      case EventKind.Error:
        return this._protocolError(item.value.error, item.value.raw);
      case EventKind.Oversized:
        return this._oversized(item.value.error);
      case EventKind.Disconnect:
        return this._channelGone();
      case EventKind.Exit:
        return this._onExit(item.value);
      default:
        return this._onInternal(item.value);
    }
  }

  _emitMessage(message, handle) {
    if (message !== null && typeof message === 'object' && typeof message.cmd === 'string' &&
        message.cmd.length > 5 && message.cmd.startsWith('NODE_')) {
      this._socketLists.answer(message);
      this.emit('internalMessage', message, handle);
    } else {
      this.emit('message', message, handle);
    }
  }

  _protocolError(cause, raw) {
    const err = cause.code === 'ERR_IPC_MESSAGE' ? cause : errors.ERR_IPC_MESSAGE(cause.message);
    if (raw !== undefined) err.raw = raw;
    this.emit('error', err);
  }

  // Our size guard, where Node would just wait for the rest of the frame: an 'error' for whoever
  // listens, and for a program that does not (it would run fine on Node) a warning; the channel
  // closes either way.
  _oversized(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.emitWarning(err);
  }

  _receiveHandle({ handleFrame, fd }) {
    let envelope;
    try {
      envelope = this._codec.decodeOne(handleFrame);
    } catch (error) {
      if (fd !== undefined) fs.closeSync(fd);
      return this._protocolError(error, this._codec.raw(handleFrame));
    }
    // Node retransmits a NACKed handle wrapped in a second envelope.
    if (envelope.msg?.cmd === 'NODE_HANDLE') envelope = envelope.msg;
    // No fd came with it: the core answered NACK and, as Node, nothing is delivered.
    if (fd === undefined || fd === null) return;
    this._waitingForHandle = true;
    handles.adoptIncoming(envelope, fd, (handle) => {
      if (envelope.key !== undefined) this._socketLists.track(envelope.key, handle);
      this._waitingForHandle = false;
      this._emitMessage(envelope.msg, handle);
      this._pump();
    });
  }

  _onExit() {}

  _onInternal() {}

  _maybeClose() {}
}

module.exports = { Endpoint, DEFAULT_MAX_MESSAGE };
