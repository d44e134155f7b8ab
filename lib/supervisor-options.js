'use strict';
// The supervisor's options: defaults and validation, shared by the API and the command. Each
// check names the option as its caller knows it (`options.drainTimeout`, `--drain-timeout`).
const os = require('os');
const { errors } = require('./errors');

const DEFAULTS = {
  args: [],
  cwd: undefined,
  env: {},
  silent: false,
  workers: 'max',
  ready: 'listening',
  readyTimeout: 30_000,
  drainTimeout: 10_000,
  reloadBatch: 1,
  backoff: { min: 100, max: 15_000, reset: 30_000 },
  maxRestarts: 10,
  restartWindow: 60_000,
  maxMemory: null,
  policy: undefined,
  notify: false,
  probe: null,
  metrics: null,
  control: null,
  statsInterval: null,
};

const POLICIES = ['rr', 'none', 'reuseport'];
const READY = ['listening', 'message'];

function integer(value, name, min) {
  if (typeof value !== 'number') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type number', value);
  if (!Number.isSafeInteger(value) || value < min) throw errors.ERR_OUT_OF_RANGE(name, `an integer >= ${min}`, value);
  return value;
}

function oneOf(value, name, allowed) {
  if (!allowed.includes(value)) {
    throw errors.ERR_INVALID_ARG_VALUE(name, value, `must be one of: ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return value;
}

function availableWorkers() {
  return os.availableParallelism?.() ?? os.cpus().length;
}

function workerCount(value, name) {
  if (value === 'max') return availableWorkers();
  if (typeof value !== 'number') throw errors.ERR_INVALID_ARG_VALUE(name, value, "must be a positive integer or 'max'");
  return integer(value, name, 1);
}

function backoff(value, name) {
  if (value === null || typeof value !== 'object') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type object', value);
  const out = { ...DEFAULTS.backoff, ...value };
  integer(out.min, `${name}.min`, 1);
  integer(out.max, `${name}.max`, out.min);
  integer(out.reset, `${name}.reset`, 0);
  return out;
}

// An HTTP endpoint's { port, host }; without a host it listens on `defaultHost` (undefined: every
// interface).
function address(defaultHost) {
  return (value, name) => {
    if (value === null) return null;
    if (typeof value !== 'object') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type object', value);
    if (value.host !== undefined && typeof value.host !== 'string') throw errors.ERR_INVALID_ARG_TYPE(`${name}.host`, 'of type string', value.host);
    integer(value.port, `${name}.port`, 0);
    if (value.port > 65535) throw errors.ERR_SOCKET_BAD_PORT(`${name}.port`, value.port);
    return { host: value.host ?? defaultHost, port: value.port };
  };
}

function nonEmptyString(value, name) {
  if (typeof value !== 'string' || value === '') throw errors.ERR_INVALID_ARG_TYPE(name, 'a non-empty string', value);
  return value;
}

function boolean(value, name) {
  if (typeof value !== 'boolean') throw errors.ERR_INVALID_ARG_TYPE(name, 'of type boolean', value);
  return value;
}

function stringArray(value, name) {
  if (!Array.isArray(value) || value.some((s) => typeof s !== 'string')) throw errors.ERR_INVALID_ARG_TYPE(name, 'an array of strings', value);
  return value;
}

// Validators by option; `name(key)` is how the caller names an option in its messages.
const CHECKS = {
  exec: nonEmptyString,
  args: stringArray,
  execArgv: stringArray,
  cwd: (v, n) => {
    if (v !== undefined && typeof v !== 'string') throw errors.ERR_INVALID_ARG_TYPE(n, 'of type string', v);
    return v;
  },
  env: (v, n) => {
    if (v === null || typeof v !== 'object') throw errors.ERR_INVALID_ARG_TYPE(n, 'of type object', v);
    return v;
  },
  silent: boolean,
  workers: workerCount,
  ready: (v, n) => oneOf(v, n, READY),
  policy: (v, n) => (v === undefined ? v : oneOf(v, n, POLICIES)),
  readyTimeout: (v, n) => integer(v, n, 1),
  drainTimeout: (v, n) => integer(v, n, 0),
  reloadBatch: (v, n) => integer(v, n, 1),
  backoff,
  maxRestarts: (v, n) => integer(v, n, 0),
  restartWindow: (v, n) => integer(v, n, 1),
  maxMemory: (v, n) => (v === null ? v : integer(v, n, 1)),
  notify: boolean,
  probe: address(undefined),
  // Metrics are for this host's scraper unless told otherwise.
  metrics: address('127.0.0.1'),
  control: (v, n) => (v === null ? v : nonEmptyString(v, n)),
  statsInterval: (v, n) => (v === null ? v : integer(v, n, 1)),
};

function normalize(options, name = (key) => `options.${key}`) {
  if (options === null || typeof options !== 'object') throw errors.ERR_INVALID_ARG_TYPE('options', 'of type object', options);
  if (options.exec === undefined) throw errors.ERR_MISSING_ARGS(name('exec'));
  const out = { ...DEFAULTS, execArgv: process.execArgv, ...options };
  for (const [key, check] of Object.entries(CHECKS)) out[key] = check(out[key], name(key));
  return out;
}

module.exports = { normalize, workerCount, DEFAULTS, POLICIES, READY };
