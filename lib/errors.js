'use strict';
// Errors shaped like Node's internal ones (same class, `code`, message), which user code and
// tests match on. Node does not export its internal error constructors, so they are rebuilt here.
const util = require('util');

// One class per code, as Node has: its toString() says `RangeError [ERR_X]: message`.
const classes = new Map();

function classFor(Base, code) {
  let NodeError = classes.get(code);
  if (NodeError === undefined) {
    NodeError = class extends Base {
      toString() {
        return `${this.name} [${code}]: ${this.message}`;
      }
    };
    Object.defineProperty(NodeError, 'name', { value: Base.name });
    classes.set(code, NodeError);
  }
  return NodeError;
}

// `factory` is where the stack starts, so it begins in the code that threw, as Node's do.
function nodeError(Base, code, message, factory) {
  const err = new (classFor(Base, code))(message);
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  // The stack's first line reads `RangeError [ERR_X]: message`: V8 formats it from `name`, once.
  err.name = `${Base.name} [${code}]`;
  Error.captureStackTrace?.(err, factory);
  void err.stack;
  delete err.name;
  return err;
}

function describe(value) {
  if (value == null) return ` Received ${value}`;
  if (typeof value === 'function') return ` Received function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') {
    const name = value.constructor?.name;
    return name ? ` Received an instance of ${name}` : ` Received ${util.inspect(value, { depth: -1 })}`;
  }
  let shown = util.inspect(value, { colors: false });
  if (shown.length > 28) shown = `${shown.slice(0, 25)}...`;
  return ` Received type ${typeof value} (${shown})`;
}

const ERRORS = {
  ERR_INVALID_ARG_TYPE: [TypeError, (name, expected, actual) => `The "${name}" argument must be ${expected}.${describe(actual)}`],
  ERR_INVALID_ARG_VALUE: [TypeError, (name, value, reason = 'is invalid') =>
    `The ${name.includes('.') ? 'property' : 'argument'} '${name}' ${reason}. Received ${util.inspect(value)}`],
  ERR_OUT_OF_RANGE: [RangeError, (name, range, value) => `The value of "${name}" is out of range. It must be ${range}. Received ${util.inspect(value)}`],
  ERR_MISSING_ARGS: [TypeError, (name) => `The "${name}" argument must be specified`],
  ERR_UNKNOWN_SIGNAL: [TypeError, (signal) => `Unknown signal: ${signal}`],
  ERR_IPC_CHANNEL_CLOSED: [Error, () => 'Channel closed'],
  ERR_IPC_DISCONNECTED: [Error, () => 'IPC channel is already disconnected'],
  ERR_IPC_ONE_PIPE: [Error, () => 'Child process can have only one IPC pipe'],
  ERR_CHILD_PROCESS_IPC_REQUIRED: [Error, (name) => `Forked processes must have an IPC channel, missing value 'ipc' in ${name}`],
  ERR_CHILD_CLOSED_BEFORE_REPLY: [Error, () => 'Child closed before reply received'],
  ERR_INVALID_HANDLE_TYPE: [TypeError, () => 'This handle type cannot be sent'],
  ERR_IPC_MESSAGE: [Error, (detail) => `Invalid message on the IPC channel: ${detail}`],
  ERR_RUST_CLUSTER_NATIVE_MISSING: [Error, (target) =>
    `rust-cluster: the native core for ${target} is not installed or cannot be loaded. ` +
    "Without it `rust-cluster` and `rust-cluster/child_process` are Node's own (unless RUST_CLUSTER_NATIVE=required); " +
    '`rust-cluster/ipc` needs it. From a checkout, build it with `npm install` (needs a Rust toolchain: cargo) or `npm run build`.'],
  ERR_SOCKET_BAD_PORT: [RangeError, (name, port) => `${name} should be >= 0 and < 65536. Received ${util.inspect(port)}.`],
};

// errors.ERR_X(...args) makes that error.
const errors = {};
for (const [code, [Base, format]] of Object.entries(ERRORS)) {
  errors[code] = function factory(...args) {
    return nodeError(Base, code, format(...args), factory);
  };
}


// A libuv-style system error: negative errno, `code`, `syscall`, as Node's ErrnoException.
function errnoException(errno, syscall, extra) {
  const code = util.getSystemErrorName(-Math.abs(errno));
  const err = new Error(`${syscall} ${code}${extra ? ` ${extra}` : ''}`);
  err.errno = -Math.abs(errno);
  err.code = code;
  err.syscall = syscall;
  return err;
}

class AbortError extends Error {
  constructor(message = 'The operation was aborted', options = undefined) {
    super(message, options);
    this.code = 'ABORT_ERR';
    this.name = 'AbortError';
  }
}

module.exports = { errors, errnoException, AbortError };
