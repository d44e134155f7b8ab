'use strict';
// The primary side of `cluster`, as Node's internal/cluster/primary.js presents it, on the Rust
// core. Workers are forked with NODE_UNIQUE_ID so Node's own worker code runs in them; the core
// answers their NODE_CLUSTER requests (listening sockets, round-robin hand-offs) and tells us only
// what must be emitted here: online, listening, exitedAfterDisconnect.
const EventEmitter = require('events');
const net = require('net');
const { spawnChild } = require('./child');
const { binding } = require('./native');
const { errors } = require('./errors');
const nodeLine = require('./node-line');

const { SCHED_NONE, SCHED_RR, SCHED_REUSEPORT } = binding;
const POLICIES = { none: SCHED_NONE, rr: SCHED_RR, reuseport: SCHED_REUSEPORT };
// libuv's flag for an IPv6-only TCP socket, as workers send it in `flags`.
const UV_TCP_IPV6ONLY = 1;

// Shaped as Node's: callable with or without `new`, options optional, methods on the prototype.
function Worker(options) {
  if (!(this instanceof Worker)) return new Worker(options);
  EventEmitter.call(this);
  if (options === null || typeof options !== 'object') options = {};
  this.exitedAfterDisconnect = undefined;
  this.state = options.state || 'none';
  this.id = options.id | 0;
  if (options.process) {
    this.process = options.process;
    this.process.on('error', (code, signal) => this.emit('error', code, signal));
    this.process.on('message', (message, handle) => this.emit('message', message, handle));
  }
}
Object.setPrototypeOf(Worker.prototype, EventEmitter.prototype);
Object.setPrototypeOf(Worker, EventEmitter);

// The name Node used before v6 (DEP0007); the seed still reads it.
Object.defineProperty(Worker.prototype, 'suicide', {
  get() {
    return this.exitedAfterDisconnect;
  },
  configurable: true,
});

Object.assign(Worker.prototype, {
  send(...args) {
    return this.process.send(...args);
  },
  isDead() {
    return this.process.exitCode != null || this.process.signalCode != null;
  },
  isConnected() {
    return this.process.connected;
  },
  disconnect() {
    this.exitedAfterDisconnect = true;
    if (this.process.connected) binding.disconnectWorker(this.process._id);
    removeWorker(this);
    return this;
  },
  destroy(signo) {
    this.process.kill(signo || 'SIGTERM');
  },
  kill(...args) {
    this.destroy(...args);
  },
});

const cluster = new EventEmitter();
const intercom = new EventEmitter();
let ids = 0;
let initialized = false;

function policyFromEnv() {
  return POLICIES[process.env.NODE_CLUSTER_SCHED_POLICY] ?? SCHED_RR;
}

// As Node: it signals "no workers" on every call that leaves none, which is what lets a
// `disconnect(cb)` registered after the workers were removed still fire when the last one exits.
function removeWorker(worker) {
  delete cluster.workers[worker.id];
  if (Object.keys(cluster.workers).length === 0) intercom.emit('disconnect');
}

function setupPrimary(options) {
  const settings = {
    args: process.argv.slice(2),
    exec: process.argv[1],
    execArgv: process.execArgv,
    silent: false,
    ...cluster.settings,
    ...options,
  };
  // As Node: each process's V8 profile goes to its own file.
  if (settings.execArgv.some((s) => s.startsWith('--prof')) && !settings.execArgv.some((s) => s.startsWith('--logfile='))) {
    settings.execArgv = [...settings.execArgv, '--logfile=v8-%p.log'];
  }
  cluster.settings = settings;
  if (!initialized) {
    initialized = true;
    if (!Object.values(POLICIES).includes(cluster.schedulingPolicy)) {
      throw errors.ERR_INVALID_ARG_VALUE('cluster.schedulingPolicy', cluster.schedulingPolicy);
    }
    // Frozen from here on, as in Node.
    binding.setSchedulingPolicy(cluster.schedulingPolicy);
    binding.setFixedPortKeys(nodeLine.keysFixedPortsWithoutIndex);
  }
  process.nextTick(() => cluster.emit('setup', settings));
}

let debugPortOffset = 1;

function workerExecArgv(settings) {
  // As Node: refused when a worker is forked, not when the setting is made.
  if (settings.inspectPort === null) throw errors.ERR_SOCKET_BAD_PORT('Port', null);
  let execArgv = settings.execArgv;
  if (!execArgv.some((arg) => /^--inspect(-brk|-port)?(=|$)/.test(arg))) return execArgv;
  let port = settings.inspectPort;
  if (typeof port === 'function') port = port();
  else if (port === undefined) port = process.debugPort + debugPortOffset++;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw errors.ERR_SOCKET_BAD_PORT('Port', port);
  execArgv = [...execArgv, `--inspect-port=${port}`];
  return execArgv;
}

function fork(env) {
  setupPrimary();
  const id = ++ids;
  const { settings } = cluster;
  const workerProcess = spawnChild(settings.exec, settings.args, {
    cwd: settings.cwd,
    env: { ...process.env, ...env },
    serialization: settings.serialization,
    silent: settings.silent,
    execArgv: workerExecArgv(settings),
    stdio: settings.stdio,
    gid: settings.gid,
    uid: settings.uid,
  }, { worker: true, extraEnv: { NODE_UNIQUE_ID: String(id) } });
  const worker = new Worker({ id, process: workerProcess });
  worker.on('message', function onMessage(message, handle) {
    cluster.emit('message', this, message, handle);
  });
  workerProcess.once('exit', (exitCode, signalCode) => {
    if (!worker.isConnected()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'dead';
    worker.emit('exit', exitCode, signalCode);
    cluster.emit('exit', worker, exitCode, signalCode);
  });
  workerProcess.once('disconnect', () => {
    if (worker.isDead()) removeWorker(worker);
    worker.exitedAfterDisconnect = !!worker.exitedAfterDisconnect;
    worker.state = 'disconnected';
    worker.emit('disconnect');
    cluster.emit('disconnect', worker);
  });
  workerProcess._onInternal = (event) => onClusterEvent(worker, JSON.parse(event.text));
  process.nextTick(() => cluster.emit('fork', worker));
  cluster.workers[worker.id] = worker;
  return worker;
}

function onClusterEvent(worker, message) {
  switch (message.act) {
    case 'online':
      worker.state = 'online';
      worker.emit('online');
      cluster.emit('online', worker);
      break;
    case 'listening': {
      const info = { addressType: message.addressType, address: message.address, port: message.port, fd: message.fd };
      worker.state = 'listening';
      worker.emit('listening', info);
      cluster.emit('listening', worker, info);
      break;
    }
    case 'exitedAfterDisconnect':
      worker.exitedAfterDisconnect = true;
      break;
    case 'listen':
      listenFor(message);
      break;
  }
}

// A worker asked for a round-robin server that does not exist yet: made as Node's primary makes
// it (net.Server#listen with the worker's options, so what wraps that method sees the call), then
// its socket goes to the core, which accepts on it from then on; this server object closes before
// the event loop could accept anything on it.
function listenFor({ key, query }) {
  const server = net.createServer();
  server.once('listening', () => {
    binding.adoptServer(key, server._handle.fd);
    server.close();
  });
  server.once('error', (err) => binding.adoptServer(key, err.errno));
  if (query.fd >= 0) server.listen({ fd: query.fd });
  else server.listen({ port: query.port, host: query.address ?? undefined, ipv6Only: Boolean(query.flags & UV_TCP_IPV6ONLY), backlog: query.backlog });
}

function disconnect(cb) {
  const workers = Object.values(cluster.workers);
  if (workers.length === 0) process.nextTick(() => intercom.emit('disconnect'));
  for (const worker of workers) {
    if (worker.isConnected()) worker.disconnect();
  }
  if (typeof cb === 'function') intercom.once('disconnect', cb);
}

Object.assign(cluster, {
  isWorker: false,
  isMaster: true,
  isPrimary: true,
  Worker,
  workers: {},
  settings: {},
  SCHED_NONE,
  SCHED_RR,
  SCHED_REUSEPORT,
  schedulingPolicy: policyFromEnv(),
  setupPrimary,
  setupMaster: setupPrimary,
  fork,
  disconnect,
});

module.exports = cluster;
