'use strict';
// `fork()` and the ChildProcess-like object it returns, on the Rust core.
//
// The process is spawned and reaped in Rust and its IPC channel is read and written there; this
// file keeps Node's API: argument handling, validation, error codes, event order, ref counting.
// Outgoing messages are serialized here and written in one batch per tick; incoming ones arrive
// in batches and are emitted one by one, in order.
const EventEmitter = require('events');
const net = require('net');
const os = require('os');
const { fileURLToPath } = require('url');
const util = require('util');
const native = require('./native');
const serialization = require('./serialization');
const handles = require('./handles');
const { errors, errnoException, AbortError } = require('./errors');

const { binding } = native;
const STDIO_PIPE = -1;
const STDIO_IPC = -2;
const STDIO_IGNORE = -3;
// Node's send() returns false once this much is queued and unwritten.
const HIGH_WATER = 128 * 1024;
// Above this much pending in one tick, write now rather than at the end of the tick.
const BATCH_LIMIT = 64 * 1024;
// Default limit on one incoming message; `maxMessageSize` changes it (README: Reliability).
const DEFAULT_MAX_MESSAGE = 512 * 1024 * 1024;
const SPAWN_ERRORS_EMITTED = new Set(['EACCES', 'EAGAIN', 'EMFILE', 'ENFILE', 'ENOENT']);

const signalNames = Object.fromEntries(Object.entries(os.constants.signals).map(([name, num]) => [num, name]));

function signalNumber(signal, name = 'signal') {
  if (typeof signal === 'number') {
    if (signal === 0 || signalNames[signal]) return signal;
    throw errors.ERR_UNKNOWN_SIGNAL(signal);
  }
  if (typeof signal === 'string') {
    const num = os.constants.signals[signal.toUpperCase()];
    if (num) return num;
    throw errors.ERR_UNKNOWN_SIGNAL(signal);
  }
  throw errors.ERR_INVALID_ARG_TYPE(name, 'of type string or number', signal);
}

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

  get fd() {
    return undefined;
  }
}

class ChildProcess extends EventEmitter {
  constructor() {
    super();
    this.pid = undefined;
    this.connected = false;
    this.killed = false;
    this.exitCode = null;
    this.signalCode = null;
    this.spawnfile = undefined;
    this.spawnargs = [];
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [];
    this.channel = undefined;
    this._id = 0;
    this._codec = serialization.json;
    this._closesNeeded = 1;
    this._closesGot = 0;
    this._exited = false;
    this._processRef = false;
    this._channelRef = false;
    // Outgoing: frames and callbacks of this tick, and chunks the core has not finished writing.
    this._batch = [];
    this._batchSize = 0;
    this._batchCallbacks = [];
    this._flushScheduled = false;
    this._submitted = 0;
    this._queued = 0;
    this._unwritten = [];
    this._handlesInFlight = [];
    // Incoming: decoded items waiting to be emitted, one per step, in order.
    this._inbox = [];
    this._inboxAt = 0;
    this._pumping = false;
    this._waitingForHandle = false;
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
    if (message === undefined) throw errors.ERR_MISSING_ARGS('message');
    if (!['string', 'object', 'number', 'boolean'].includes(typeof message)) {
      throw errors.ERR_INVALID_ARG_TYPE('message', 'one of type string, object, number, or boolean', message);
    }
    const outgoing = handle === undefined || handle === null ? null : handles.describeOutgoing(handle);
    if (!this.connected) {
      const err = errors.ERR_IPC_CHANNEL_CLOSED();
      if (typeof callback === 'function') process.nextTick(callback, err);
      else process.nextTick(() => this.emit('error', err));
      return false;
    }
    if (outgoing) return this._sendHandle(message, handle, outgoing, options, callback);
    const frame = this._codec.encode(message);
    this._batch.push(frame);
    this._batchSize += this._codec.size(frame);
    if (typeof callback === 'function') this._batchCallbacks.push(callback);
    if (this._batchSize >= BATCH_LIMIT) this._flush();
    else if (!this._flushScheduled) {
      this._flushScheduled = true;
      process.nextTick(() => this._flush());
    }
    return this._queued + this._batchSize < HIGH_WATER;
  }

  _sendHandle(message, handle, { type, fd, fields }, options, callback) {
    const frame = this._codec.encode({ cmd: 'NODE_HANDLE', type, msg: message, ...fields });
    this._flush();
    if (fd === undefined) {
      // A handle with no fd (closed, not yet bound): Node's peer would NACK it; report it now.
      const err = errnoException(9, 'write');
      if (typeof callback === 'function') process.nextTick(callback, err);
      else process.nextTick(() => this.emit('error', err));
      return false;
    }
    const keepOpen = Boolean(options?.keepOpen);
    if (type === 'net.Socket' && !keepOpen) {
      // Node stops reading at once so no data meant for the receiver is consumed here.
      handle._handle?.readStop?.();
    }
    const result = binding.writeHandle(this._id, frame, fd);
    this._handlesInFlight.push({ handle, type, keepOpen });
    this._submitted++;
    this._afterWrite(result, typeof callback === 'function' ? [callback] : []);
    return this._queued < HIGH_WATER;
  }

  _flush() {
    this._flushScheduled = false;
    if (this._batch.length === 0 || this._id === 0 || !this.connected) return;
    const data = this._codec.join(this._batch);
    const callbacks = this._batchCallbacks;
    this._batch = [];
    this._batchSize = 0;
    this._batchCallbacks = [];
    const result = binding.write(this._id, data);
    this._submitted++;
    this._afterWrite(result, callbacks);
  }

  _afterWrite(result, callbacks) {
    if (result < 0) {
      const err = result === -32 ? errors.ERR_IPC_CHANNEL_CLOSED() : errnoException(-result, 'write');
      for (const callback of callbacks) process.nextTick(callback, err);
      return;
    }
    this._queued = result;
    if (callbacks.length) this._unwritten.push({ chunk: this._submitted, callbacks });
    if (result === 0) this._written(this._submitted);
  }

  _written(completed) {
    if (completed >= this._submitted) this._queued = 0;
    while (this._unwritten.length && this._unwritten[0].chunk <= completed) {
      for (const callback of this._unwritten.shift().callbacks) process.nextTick(callback, null);
    }
  }

  disconnect() {
    if (!this.connected) {
      this.emit('error', errors.ERR_IPC_DISCONNECTED());
      return;
    }
    this._flush();
    this.connected = false;
    this._written(binding.close(this._id));
    this._channelGone();
  }

  _channelGone() {
    this.connected = false;
    this.channel = null;
    this._setChannelRef(false);
    const err = errors.ERR_IPC_CHANNEL_CLOSED();
    for (const { callbacks } of this._unwritten.splice(0)) {
      for (const callback of callbacks) process.nextTick(callback, err);
    }
    for (const { handle, type, keepOpen } of this._handlesInFlight.splice(0)) {
      if (type === 'net.Socket' && !keepOpen) handle.destroy();
    }
    process.nextTick(() => {
      this.emit('disconnect');
      this._maybeClose();
    });
  }

  kill(sig) {
    const signal = sig === undefined ? os.constants.signals.SIGTERM : signalNumber(sig);
    if (this._exited || this._id === 0) return false;
    const errno = binding.kill(this._id, signal);
    if (errno === 0) {
      this.killed = true;
      return true;
    }
    if (errno === os.constants.errno.ESRCH) return false;
    const err = errnoException(errno, 'kill');
    if (errno === os.constants.errno.EINVAL || errno === os.constants.errno.ENOSYS) throw err;
    this.emit('error', err);
    return false;
  }

  ref() {
    if (!this._exited) this._setProcessRef(true);
  }

  unref() {
    this._setProcessRef(false);
  }

  _setProcessRef(on) {
    if (on === this._processRef) return;
    this._processRef = on;
    if (on) native.ref();
    else native.unref();
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
      case 'messages':
        for (const item of this._codec.decode(event.text ?? event.data)) this._inbox.push(item);
        break;
      case 'handle':
        this._inbox.push({ handleFrame: event.text ?? event.data, fd: event.fd });
        break;
      case 'written':
        this._written(event.count);
        return;
      case 'acked':
      case 'lost': {
        const sent = this._handlesInFlight.shift();
        if (sent && sent.type === 'net.Socket' && !sent.keepOpen) sent.handle.destroy();
        if (event.kind === 'lost') {
          process.emitWarning('Handle did not reach the receiving process correctly', 'SentHandleNotReceivedWarning');
        }
        return;
      }
      case 'error':
        this._inbox.push({ error: errors.ERR_IPC_MESSAGE(event.text) });
        break;
      case 'disconnect':
        this._inbox.push({ disconnect: true });
        break;
      case 'exit':
        this._inbox.push({ exit: event });
        break;
      default:
        this._inbox.push({ native: event });
    }
    this._pump();
  }

  // Emits queued items in order, one at a time, as Node emits each message on its own tick. A
  // listener that throws does not lose the rest: they are picked up on the next tick.
  _pump() {
    if (this._pumping || this._waitingForHandle) return;
    this._pumping = true;
    process.nextTick(() => {
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
    });
  }

  _deliver(item) {
    if ('message' in item) this._emitMessage(item.message, undefined);
    else if (item.handleFrame !== undefined) this._receiveHandle(item);
    else if (item.error) this._protocolError(item.error, item.raw);
    else if (item.disconnect) {
      if (this.connected) this._channelGone();
    } else if (item.exit) this._onExit(item.exit);
    else this._onInternal(item.native);
  }

  _emitMessage(message, handle) {
    if (message !== null && typeof message === 'object' && typeof message.cmd === 'string' &&
        message.cmd.length > 5 && message.cmd.startsWith('NODE_')) {
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

  _receiveHandle({ handleFrame, fd }) {
    let envelope;
    try {
      envelope = this._codec.decodeOne(this._codec === serialization.json ? handleFrame.trimEnd() : handleFrame);
    } catch (error) {
      if (fd !== undefined) require('fs').closeSync(fd);
      return this._protocolError(error, handleFrame);
    }
    // Node retransmits a NACKed handle wrapped in a second envelope.
    if (envelope.msg?.cmd === 'NODE_HANDLE') envelope = envelope.msg;
    // No fd came with it: the core answered NACK and, as Node, nothing is delivered.
    if (fd === undefined || fd === null) return;
    this._waitingForHandle = true;
    handles.adoptIncoming(envelope, fd, (handle) => {
      this._waitingForHandle = false;
      this._emitMessage(envelope.msg, handle);
      this._pump();
    });
  }

  _onExit({ code, signal }) {
    this._exited = true;
    if (signal !== undefined && signal !== null) this.signalCode = signalNames[signal] ?? signal;
    else this.exitCode = code;
    this._setProcessRef(false);
    if (this._timeout) clearTimeout(this._timeout);
    this._removeAbortListener?.();
    this.stdin?.destroy();
    this.emit('exit', this.exitCode, this.signalCode);
    this._maybeClose();
  }

  _onInternal() {}

  _maybeClose() {
    if (++this._closesGot === this._closesNeeded) {
      native.disown(this._id);
      this.emit('close', this.exitCode, this.signalCode);
    }
  }

  [util.inspect.custom](depth, options, inspect) {
    return `ChildProcess ${inspect({ pid: this.pid, connected: this.connected, exitCode: this.exitCode, signalCode: this.signalCode }, options)}`;
  }
}

function validatePathLike(value, name) {
  if (value instanceof URL) return fileURLToPath(value);
  if (typeof value !== 'string') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type string or an instance of URL', value);
  if (value.includes('\u0000')) {
    throw errors.ERR_INVALID_ARG_VALUE(name, value, 'must be a string without null bytes');
  }
  return value;
}

function validateOptions(options) {
  const check = (name, ok, expected) => {
    if (options[name] != null && !ok(options[name])) throw errors.ERR_INVALID_ARG_TYPE(`options.${name}`, expected, options[name]);
  };
  check('env', (v) => typeof v === 'object', 'of type object');
  check('detached', (v) => typeof v === 'boolean', 'of type boolean');
  check('uid', (v) => Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31, 'int32');
  check('gid', (v) => Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31, 'int32');
  check('execArgv', Array.isArray, 'an instance of Array');
  check('silent', (v) => typeof v === 'boolean', 'of type boolean');
  if (options.serialization !== undefined && !['json', 'advanced'].includes(options.serialization)) {
    throw errors.ERR_INVALID_ARG_VALUE('options.serialization', options.serialization, "must be one of: 'json', 'advanced'");
  }
  if (options.timeout != null && !(Number.isInteger(options.timeout) && options.timeout >= 0)) {
    throw errors.ERR_OUT_OF_RANGE('options.timeout', 'an integer >= 0', options.timeout);
  }
  if (options.signal != null && !(options.signal instanceof AbortSignal)) {
    throw errors.ERR_INVALID_ARG_TYPE('options.signal', 'an instance of AbortSignal', options.signal);
  }
  if (options.killSignal != null) signalNumber(options.killSignal, 'options.killSignal');
  if (options.maxMessageSize != null && !(Number.isInteger(options.maxMessageSize) && options.maxMessageSize > 0)) {
    throw errors.ERR_OUT_OF_RANGE('options.maxMessageSize', 'a positive integer', options.maxMessageSize);
  }
}

// Node's stdio normalisation for fork: always exactly one 'ipc' entry.
function normalizeStdio(options) {
  let stdio = options.stdio;
  if (typeof stdio === 'string') stdio = [stdio, stdio, stdio, 'ipc'];
  else if (!Array.isArray(stdio)) stdio = options.silent ? ['pipe', 'pipe', 'pipe', 'ipc'] : [0, 1, 2, 'ipc'];
  else if (!stdio.includes('ipc')) throw errors.ERR_CHILD_PROCESS_IPC_REQUIRED('options.stdio');
  if (stdio.filter((s) => s === 'ipc').length > 1) throw errors.ERR_IPC_ONE_PIPE();
  return stdio.map((entry, index) => {
    if (entry === 'ipc') return STDIO_IPC;
    if (entry == null) return index < 3 ? STDIO_PIPE : STDIO_IGNORE;
    if (entry === 'pipe' || entry === 'overlapped') return STDIO_PIPE;
    if (entry === 'ignore') return STDIO_IGNORE;
    if (entry === 'inherit') return index;
    if (typeof entry === 'number') return entry;
    const fd = entry._handle?.fd ?? entry.fd;
    if (Number.isInteger(fd) && fd >= 0) return fd;
    throw errors.ERR_INVALID_ARG_VALUE('stdio', entry);
  });
}

function envPairs(env, extra) {
  const pairs = [];
  for (const key of Object.keys(env)) {
    const value = env[key];
    if (value !== undefined && !(key in extra)) pairs.push(`${key}=${value}`);
  }
  for (const [key, value] of Object.entries(extra)) pairs.push(`${key}=${value}`);
  return pairs;
}

function fork(modulePath, args, options) {
  modulePath = validatePathLike(modulePath, 'modulePath');
  if (args == null) args = [];
  else if (typeof args === 'object' && !Array.isArray(args)) {
    options = args;
    args = [];
  } else if (!Array.isArray(args)) {
    throw errors.ERR_INVALID_ARG_VALUE('args', args);
  }
  if (options != null && typeof options !== 'object') throw errors.ERR_INVALID_ARG_TYPE('options', 'of type object', options);
  return spawnChild(modulePath, args, { ...options });
}

// Spawns `execPath [...execArgv] modulePath [...args]` with an IPC channel. `options.worker`
// (internal, cluster) marks a cluster worker: the core then answers its NODE_CLUSTER requests.
function spawnChild(modulePath, args, options) {
  validateOptions(options);
  const execPath = options.execPath || process.execPath;
  let execArgv = options.execArgv || process.execArgv;
  if (execArgv === process.execArgv && process._eval != null) {
    const index = execArgv.lastIndexOf(process._eval);
    if (index > 0) execArgv = [...execArgv.slice(0, index - 1), ...execArgv.slice(index + 1)];
  }
  const argv = [...execArgv, modulePath, ...args].map(String);
  const stdio = normalizeStdio(options);
  const serializationMode = options.serialization || 'json';
  const extra = {};
  if (process.env.NODE_V8_COVERAGE !== undefined) extra.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
  Object.assign(extra, options.extraEnv);
  extra.NODE_CHANNEL_FD = String(stdio.indexOf(STDIO_IPC));
  extra.NODE_CHANNEL_SERIALIZATION_MODE = serializationMode;
  const cwd = options.cwd == null ? undefined : validatePathLike(options.cwd, 'options.cwd');

  const child = new ChildProcess();
  child.spawnfile = execPath;
  child.spawnargs = [options.argv0 ?? execPath, ...argv];
  child._codec = serialization[serializationMode];
  const result = binding.spawn({
    file: execPath,
    args: child.spawnargs,
    env: envPairs(options.env || process.env, extra),
    cwd,
    stdio,
    uid: options.uid ?? undefined,
    gid: options.gid ?? undefined,
    detached: Boolean(options.detached),
    serialization: serializationMode,
    maxMessageSize: options.maxMessageSize ?? DEFAULT_MAX_MESSAGE,
    worker: options.worker,
  });
  child.connected = true;
  child.channel = new Control(child);
  if (result.errno !== undefined && result.errno !== null) {
    const err = errnoException(result.errno, `spawn ${execPath}`);
    if (!SPAWN_ERRORS_EMITTED.has(err.code)) {
      err.syscall = 'spawn';
      err.message = `spawn ${err.code}`;
      throw err;
    }
    err.path = execPath;
    err.spawnargs = child.spawnargs.slice(1);
    process.nextTick(() => {
      child.exitCode = err.errno;
      child.emit('error', err);
      child.emit('close', child.exitCode, null);
      child.connected = false;
      child.channel = null;
      child.emit('disconnect');
    });
    return child;
  }
  child._id = result.id;
  child.pid = result.pid;
  native.own(child._id, child);
  child._setProcessRef(true);
  child._setChannelRef(true);
  child._closesNeeded++;
  setupStdio(child, result.fds, stdio);
  setupTermination(child, options);
  process.nextTick(() => child.emit('spawn'));
  return child;
}

function setupStdio(child, fds, stdio) {
  child.stdio = stdio.map((entry, index) => {
    const fd = fds[index];
    if (entry !== STDIO_PIPE || fd === undefined || fd < 0) return null;
    const socket = new net.Socket({ fd, readable: index !== 0, writable: index === 0 || index > 2 });
    if (index > 0) {
      child._closesNeeded++;
      socket.on('close', () => child._maybeClose());
    }
    return socket;
  });
  [child.stdin, child.stdout, child.stderr] = [0, 1, 2].map((i) => child.stdio[i] ?? null);
}

function setupTermination(child, options) {
  const killSignal = options.killSignal ?? 'SIGTERM';
  if (options.timeout > 0) {
    child._timeout = setTimeout(() => {
      child._timeout = null;
      child.kill(killSignal);
    }, options.timeout);
    child._timeout.unref();
  }
  const signal = options.signal;
  if (!signal) return;
  const onAbort = () => {
    if (child.kill(killSignal)) child.emit('error', new AbortError(undefined, { cause: signal.reason }));
  };
  if (signal.aborted) {
    process.nextTick(onAbort);
  } else {
    signal.addEventListener('abort', onAbort, { once: true });
    child._removeAbortListener = () => signal.removeEventListener('abort', onAbort);
  }
}

module.exports = { fork, spawnChild };
