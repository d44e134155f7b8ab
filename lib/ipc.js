'use strict';
// Message channels between unrelated processes (`rust-cluster/ipc`), shaped like `net`.
//
// Node's `net` listens and connects; each connected socket's fd is then handed to the Rust core,
// which runs on it exactly the channel that `fork()` has: Node's framing, batching, and handle
// passing with SCM_RIGHTS over unix paths. The JS socket never reads (servers pause on connect,
// clients are paused before connecting), so no byte is consumed before the core takes over.
const EventEmitter = require('events');
const net = require('net');
const { Endpoint, DEFAULT_MAX_MESSAGE } = require('./endpoint');
const serialization = require('./serialization');
const native = require('./native');
const { errors } = require('./errors');
const { listenOnPath } = require('./unix-listen');

function channelOptions(options = {}) {
  const mode = options.serialization ?? 'json';
  serialization.validate(mode);
  return { serialization: mode, maxMessageSize: options.maxMessageSize ?? DEFAULT_MAX_MESSAGE };
}

class Channel extends Endpoint {
  constructor(options) {
    super();
    this._options = options;
    this.remoteAddress = undefined;
    // A client may send before its connection is up; those messages go out, in order, once it is.
    this._connecting = true;
    this._early = [];
    // Known from the address before the connection is up, so a handle over TCP fails at once.
    this._tcp = false;
  }

  // Hands the connected socket's fd to the core and lets the JS socket go; on failure the socket
  // is destroyed and the error goes to `report`. Returns whether the channel is up.
  _adopt(socket, report) {
    let id;
    try {
      id = native.binding.openChannel(socket._handle.fd, this._options.serialization, this._options.maxMessageSize);
    } catch (err) {
      socket.destroy();
      report(err);
      return false;
    }
    this._tcp = socket.remoteFamily !== undefined;
    this.remoteAddress = socket.remoteAddress;
    socket.destroy();
    this._attach(id, this._options.serialization);
    this._connecting = false;
    for (const args of this._early.splice(0)) {
      try {
        this.send(...args);
      } catch (err) {
        this.emit('error', err);
      }
    }
    return true;
  }

  send(message, handle, options, callback) {
    const carriesHandle = handle !== undefined && handle !== null && typeof handle !== 'function';
    if (carriesHandle && this._tcp) {
      const err = errors.ERR_INVALID_HANDLE_TYPE();
      err.message = 'Handles can only be sent over a unix-domain channel, not TCP';
      throw err;
    }
    if (this._connecting) {
      this._early.push([message, handle, options, callback]);
      return true;
    }
    return super.send(message, handle, options, callback);
  }

  ref() {
    this._setChannelRef(true);
  }

  unref() {
    this._setChannelRef(false);
  }

  _maybeClose() {
    native.disown(this._id);
    this.emit('close');
  }
}

class Server extends EventEmitter {
  constructor(options, connectionListener) {
    super();
    if (typeof options === 'function') {
      connectionListener = options;
      options = {};
    }
    this._options = { ...channelOptions(options), mode: options?.mode ?? 0o600 };
    this._channels = new Set();
    this._path = undefined;
    this._server = net.createServer({ pauseOnConnect: true }, (socket) => this._onSocket(socket));
    this._server.on('error', (err) => this.emit('error', err));
    this._server.on('close', () => this.emit('close'));
    if (connectionListener) this.on('connection', connectionListener);
  }

  _onSocket(socket) {
    const channel = new Channel(this._options);
    if (!channel._adopt(socket, (err) => this.emit('error', err))) return;
    this._channels.add(channel);
    channel.once('disconnect', () => this._channels.delete(channel));
    this.emit('connection', channel);
  }

  // listen(path[, callback]) or listen(port[, host][, callback]) or listen({path} | {port, host}).
  listen(...args) {
    const callback = typeof args[args.length - 1] === 'function' ? args.pop() : undefined;
    const [first, host] = args;
    const target = typeof first === 'object' && first !== null ? first : typeof first === 'string' && !/^\d+$/.test(first) ? { path: first } : { port: Number(first), host };
    if (callback) this.once('listening', callback);
    if (target.path !== undefined) return this._listenPath(target.path);
    this._server.listen({ port: target.port, host: target.host }, () => this.emit('listening'));
    return this;
  }

  // A socket file left by a dead server is replaced; a live server's is not (EADDRINUSE).
  _listenPath(path) {
    this._path = path;
    listenOnPath(this._server, path, this._options.mode, () => this.emit('listening'), (err) => this.emit('error', err));
    return this;
  }

  address() {
    return this._server.address();
  }

  // Sends `message` (and `handle`, over unix paths) to every connected channel.
  broadcast(message, handle) {
    for (const channel of this._channels) {
      if (channel.connected) channel.send(message, handle);
    }
  }

  close(callback) {
    for (const channel of this._channels) {
      if (channel.connected) channel.disconnect();
    }
    this._server.close(callback);
    return this;
  }

  ref() {
    this._server.ref();
    return this;
  }

  unref() {
    this._server.unref();
    return this;
  }
}

function createServer(options, connectionListener) {
  return new Server(options, connectionListener);
}

// connect(path | {path} | {port, host}[, options][, connectListener]) → a Channel.
function connect(target, options, connectListener) {
  if (typeof options === 'function') {
    connectListener = options;
    options = undefined;
  }
  const spec = typeof target === 'object' && target !== null ? target : typeof target === 'number' ? { port: target } : { path: target };
  const channel = new Channel(channelOptions({ ...spec, ...options }));
  channel._tcp = spec.path === undefined;
  const socket = spec.path !== undefined ? net.connect(spec.path) : net.connect(spec.port, spec.host);
  // Paused before the connection exists, so the JS socket never reads what the peer sends first.
  socket.pause();
  if (connectListener) channel.once('connect', connectListener);
  socket.once('connect', () => {
    socket.removeAllListeners('error');
    if (channel._adopt(socket, (err) => channel.emit('error', err))) channel.emit('connect');
  });
  socket.once('error', (err) => channel.emit('error', err));
  return channel;
}

module.exports = { createServer, connect, Server, Channel };
