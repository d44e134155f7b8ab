'use strict';
// `fork()` and the ChildProcess-like object it returns, on the Rust core.
//
// The process is spawned and reaped in Rust and its IPC channel is read and written there; this
// file keeps Node's API: argument handling, validation, error codes, event order, ref counting.
// The channel half (send, messages, disconnect) is the shared Endpoint.
const dc = require('diagnostics_channel');
const net = require('net');
const os = require('os');
const { fileURLToPath } = require('url');
const util = require('util');
const native = require('./native');
const { Endpoint, DEFAULT_MAX_MESSAGE } = require('./endpoint');
const serialization = require('./serialization');
const { errors, errnoException, AbortError } = require('./errors');
const nodeLine = require('./node-line');
const preload = require('./register-children');

const { binding } = native;
const { STDIO_PIPE, STDIO_IPC, STDIO_IGNORE } = binding;
const SPAWN_ERRORS_EMITTED = new Set(['EACCES', 'EAGAIN', 'EMFILE', 'ENFILE', 'ENOENT']);
// Node publishes every child it spawns here, and on newer lines traces the spawn itself.
const childProcessChannel = dc.channel('child_process');
const spawnTrace = nodeLine.tracesSpawn ? dc.tracingChannel('child_process.spawn') : undefined;

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

class ChildProcess extends Endpoint {
  constructor() {
    super();
    this.pid = undefined;
    this.killed = false;
    this.exitCode = null;
    this.signalCode = null;
    this.spawnfile = undefined;
    this.spawnargs = [];
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [];
    // 'close' waits for the exit, the channel and every stdio stream but stdin.
    this._closesNeeded = 1;
    this._closesGot = 0;
    this._exited = false;
    this._processRef = false;
  }

  kill(sig) {
    const signal = sig === undefined ? os.constants.signals.SIGTERM : signalNumber(sig);
    if (this._exited || this._id === 0) return false;
    // Node writes a send at once: one made before the kill reaches the child first.
    this._out.flush();
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

// A path as Node takes one: a string, a Uint8Array or a file: URL, without NUL bytes.
function validatePathLike(value, name) {
  if (value instanceof URL) return fileURLToPath(value);
  if (value instanceof Uint8Array) value = Buffer.from(value).toString();
  if (typeof value !== 'string') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type string or an instance of Buffer or URL', value);
  if (value.includes('\u0000')) {
    throw errors.ERR_INVALID_ARG_VALUE(name, value, 'must be a string, Uint8Array, or URL without null bytes');
  }
  return value;
}

// A NUL byte would cut the string short at exec: Node refuses it up front.
function validateNoNul(value, name) {
  if (typeof value === 'string' && value.includes('\u0000')) {
    throw errors.ERR_INVALID_ARG_VALUE(name, value, 'must be a string without null bytes');
  }
}

// fork's `timeout`, as the running line checks it.
function validateTimeout(timeout) {
  if (timeout == null) return;
  if (!nodeLine.timeoutIsInteger) {
    if (!(Number.isInteger(timeout) && timeout >= 0)) throw errors.ERR_OUT_OF_RANGE('timeout', 'an unsigned integer', timeout);
    return;
  }
  if (typeof timeout !== 'number') throw errors.ERR_INVALID_ARG_TYPE('timeout', 'of type number', timeout);
  if (!Number.isInteger(timeout)) throw errors.ERR_OUT_OF_RANGE('timeout', 'an integer', timeout);
  if (timeout < 0 || timeout > Number.MAX_SAFE_INTEGER) {
    throw errors.ERR_OUT_OF_RANGE('timeout', `>= 0 && <= ${Number.MAX_SAFE_INTEGER}`, timeout);
  }
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
  validateNoNul(options.execPath, 'options.execPath');
  (options.execArgv ?? []).forEach((arg, i) => validateNoNul(arg, `options.execArgv[${i}]`));
  serialization.validate(options.serialization);
  validateTimeout(options.timeout);
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
    if (value === undefined) continue;
    validateNoNul(key, `options.env['${key}']`);
    validateNoNul(value, `options.env['${key}']`);
    if (!(key in extra)) pairs.push(`${key}=${value}`);
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
    throw errors.ERR_INVALID_ARG_TYPE('args', 'an instance of Array', args);
  }
  if (options != null && typeof options !== 'object') throw errors.ERR_INVALID_ARG_TYPE('options', 'of type object', options);
  // Named by their place in the child's argv, as Node names them: after execArgv and the module.
  const before = (options?.execArgv || process.execArgv).length + 1;
  args.forEach((arg, i) => validateNoNul(arg, `args[${before + i}]`));
  return spawnChild(modulePath, args, { ...options });
}

// Spawns `execPath [...execArgv] modulePath [...args]` with an IPC channel. `internal` is not
// reachable through the public fork(): `worker` marks a cluster worker (the core then answers
// its NODE_CLUSTER requests), `extraEnv` adds to the child's environment.
function spawnChild(modulePath, args, options, internal = {}) {
  validateOptions(options);
  const execPath = options.execPath || process.execPath;
  let execArgv = options.execArgv || process.execArgv;
  if (execArgv === process.execArgv && process._eval != null) {
    const index = execArgv.lastIndexOf(process._eval);
    if (index > 0) execArgv = [...execArgv.slice(0, index - 1), ...execArgv.slice(index + 1)];
  }
  const cwd = options.cwd == null ? undefined : validatePathLike(options.cwd, 'options.cwd');
  execArgv = preload.execArgvFor(execArgv, options.env || process.env, cwd ?? process.cwd());
  const argv = [...execArgv, modulePath, ...args].map(String);
  const stdio = normalizeStdio(options);
  const serializationMode = options.serialization || 'json';
  const extra = {};
  if (process.env.NODE_V8_COVERAGE !== undefined) extra.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
  Object.assign(extra, internal.extraEnv);
  extra.NODE_CHANNEL_FD = String(stdio.indexOf(STDIO_IPC));
  extra.NODE_CHANNEL_SERIALIZATION_MODE = serializationMode;

  const child = new ChildProcess();
  child.spawnfile = execPath;
  child.spawnargs = [options.argv0 ?? execPath, ...argv];
  if (spawnTrace?.hasSubscribers) spawnTrace.start.publish({ process: child, options });
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
    worker: Boolean(internal.worker),
  });
  if (result.errno !== undefined && result.errno !== null) {
    const err = errnoException(result.errno, `spawn ${execPath}`);
    if (spawnTrace?.hasSubscribers) spawnTrace.error.publish({ process: child, error: errnoException(result.errno, 'spawn') });
    if (!SPAWN_ERRORS_EMITTED.has(err.code)) {
      err.syscall = 'spawn';
      err.message = `spawn ${err.code}`;
      throw err;
    }
    err.path = execPath;
    err.spawnargs = child.spawnargs.slice(1);
    // As Node: connected until the next tick, then 'error', 'close' (negative errno), 'disconnect'.
    child.connected = true;
    process.nextTick(() => {
      child.exitCode = err.errno;
      child.emit('error', err);
      child.emit('close', child.exitCode, null);
      child.connected = false;
      child.channel = null;
      child.emit('disconnect');
    });
    publishSpawned(child);
    return child;
  }
  child.pid = result.pid;
  child._attach(result.id, serializationMode);
  child._setProcessRef(true);
  child._closesNeeded++;
  setupStdio(child, result.fds, stdio);
  setupTermination(child, options);
  if (spawnTrace?.hasSubscribers) spawnTrace.end.publish({ process: child });
  process.nextTick(() => child.emit('spawn'));
  publishSpawned(child);
  return child;
}

function publishSpawned(child) {
  if (childProcessChannel.hasSubscribers) childProcessChannel.publish({ process: child });
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
