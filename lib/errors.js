'use strict';
// Errors shaped like Node's internal ones (same class, `code`, message), which user code and
// tests match on. Node does not export its internal error constructors, so they are rebuilt here.
const util = require('util');

function nodeError(Base, code, message) {
  const err = new Base(message);
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  // Node prints `TypeError [ERR_X]: message`; the stack's first line follows suit.
  err.stack = err.stack.replace(/^[^:\n]*/, `${err.name} [${code}]`);
  Error.captureStackTrace?.(err, nodeError);
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

const errors = {
  ERR_INVALID_ARG_TYPE: (name, expected, actual) =>
    nodeError(TypeError, 'ERR_INVALID_ARG_TYPE', `The "${name}" argument must be ${expected}.${describe(actual)}`),
  ERR_INVALID_ARG_VALUE: (name, value, reason = 'is invalid') =>
    nodeError(TypeError, 'ERR_INVALID_ARG_VALUE', `The argument '${name}' ${reason}. Received ${util.inspect(value)}`),
  ERR_OUT_OF_RANGE: (name, range, value) =>
    nodeError(RangeError, 'ERR_OUT_OF_RANGE', `The value of "${name}" is out of range. It must be ${range}. Received ${util.inspect(value)}`),
  ERR_MISSING_ARGS: (name) => nodeError(TypeError, 'ERR_MISSING_ARGS', `The "${name}" argument must be specified`),
  ERR_UNKNOWN_SIGNAL: (signal) => nodeError(TypeError, 'ERR_UNKNOWN_SIGNAL', `Unknown signal: ${signal}`),
  ERR_IPC_CHANNEL_CLOSED: () => nodeError(Error, 'ERR_IPC_CHANNEL_CLOSED', 'Channel closed'),
  ERR_IPC_DISCONNECTED: () => nodeError(Error, 'ERR_IPC_DISCONNECTED', 'IPC channel is already disconnected'),
  ERR_IPC_ONE_PIPE: () => nodeError(Error, 'ERR_IPC_ONE_PIPE', 'Child process can have only one IPC pipe'),
  ERR_CHILD_PROCESS_IPC_REQUIRED: (name) =>
    nodeError(Error, 'ERR_CHILD_PROCESS_IPC_REQUIRED', `Forked processes must have an IPC channel, missing value 'ipc' in ${name}`),
  ERR_CHILD_CLOSED_BEFORE_REPLY: () => nodeError(Error, 'ERR_CHILD_CLOSED_BEFORE_REPLY', 'Child closed before reply received'),
  ERR_INVALID_HANDLE_TYPE: () => nodeError(TypeError, 'ERR_INVALID_HANDLE_TYPE', 'This handle type cannot be sent'),
  ERR_IPC_MESSAGE: (detail) => nodeError(Error, 'ERR_IPC_MESSAGE', `Invalid message on the IPC channel: ${detail}`),
  ERR_SOCKET_BAD_PORT: (name, port) =>
    nodeError(RangeError, 'ERR_SOCKET_BAD_PORT', `${name} should be >= 0 and < 65536. Received ${util.inspect(port)}.`),
};

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
