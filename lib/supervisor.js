'use strict';
// Supervision on top of `cluster`: a number of worker slots kept filled (respawn with exponential
// backoff, a crash-loop stop), rolling reloads that wait until each replacement is ready before
// draining the worker it replaces, a bounded drain, graceful shutdown, a memory limit. Workers are
// ordinary cluster workers (they are in cluster.workers and cluster's events fire as usual),
// started with lib/worker-drain.js preloaded so that draining one drops no request.
//
// A slot holds one serving worker and, while it is being replaced, the replacement. Reloads,
// scaling and memory replacements run one at a time from a queue; respawns after a crash do not
// wait for it, and only ever touch their own slot.
//
// stats() gives each worker's figures (lib/supervisor-stats.js); they are also served as
// Prometheus metrics (lib/supervisor-metrics.js), and a control socket lets the `rust-cluster`
// command see and steer a running supervisor (lib/supervisor-control.js).
const EventEmitter = require('events');
const path = require('path');
const cluster = require('..');
const { errors } = require('./errors');
const { normalize, workerCount } = require('./supervisor-options');
const { createNotifier, notifySupervisor } = require('./sd-notify');
const { probeServer } = require('./supervisor-probe');
const { metricsServer } = require('./supervisor-metrics');
const { controlServer } = require('./supervisor-control');
const { StatsSampler, readFigures } = require('./supervisor-stats');

const DRAIN_PRELOAD = path.join(__dirname, 'worker-drain.js');
// RSS is sampled this often, and a worker is replaced once this many samples in a row are over.
const MEMORY_INTERVAL = 500;
const MEMORY_SAMPLES = 2;
// With metrics or a control socket and no statsInterval, the figures are still sampled this often,
// so that the CPU % they show is over the last second, not since whoever looked last.
const STATS_INTERVAL = 1000;

function supervisorError(code, message, props) {
  return Object.assign(new Error(message), { code }, props);
}

function stoppedError() {
  return supervisorError('ERR_RUST_CLUSTER_STOPPED', 'the supervisor is shutting down');
}

function describeWorker(worker) {
  return `worker ${worker.id} (pid ${worker.process.pid})`;
}

class Supervisor extends EventEmitter {
  constructor(options) {
    super();
    this.options = normalize(options);
    this.state = 'idle';
    this.crashLoop = false;
    this._slots = [];
    this._records = new Map(); // every live worker we started -> its record
    this._generation = 0; // bumped by each reload: older workers are the ones it replaces
    this._exits = []; // times of unexpected exits within the restart window
    this._queue = [];
    this._running = null;
    this._killedInShutdown = 0;
    this._notified = Promise.resolve();
    this._sampler = new StatsSampler();
  }

  start() {
    if (this.state !== 'idle') return this;
    const o = this.options;
    if (o.policy !== undefined) {
      if (Object.keys(cluster.settings).length > 0) {
        throw errors.ERR_INVALID_ARG_VALUE('options.policy', o.policy, 'cannot be set once cluster.setupPrimary() or cluster.fork() has run');
      }
      cluster.schedulingPolicy = { rr: cluster.SCHED_RR, none: cluster.SCHED_NONE, reuseport: cluster.SCHED_REUSEPORT }[o.policy];
    }
    cluster.setupPrimary({ exec: o.exec, args: o.args, execArgv: [...o.execArgv, '--require', DRAIN_PRELOAD], cwd: o.cwd, silent: o.silent });
    this.state = 'starting';
    this._workerEnv = o.env;
    if (o.notify) {
      const notify = createNotifier({ onError: (err) => this.emit('warning', err) });
      if (notify) notifySupervisor(this, (fields) => (this._notified = notify(fields)));
      // The socket is the supervisor's to speak on: workers do not inherit it.
      this._workerEnv = { ...o.env, NOTIFY_SOCKET: undefined };
    }
    const onError = (err) => this.emit('error', err);
    if (o.probe) this._probe = probeServer(this, o.probe, onError);
    if (o.metrics) this._metrics = metricsServer(this, o.metrics, onError);
    if (o.control) controlServer(this, o.control, onError);
    const statsInterval = o.statsInterval ?? (o.metrics || o.control ? STATS_INTERVAL : null);
    if (statsInterval !== null) {
      this._statsTimer = setInterval(() => {
        const stats = this.stats();
        if (o.statsInterval !== null) this.emit('stats', stats);
      }, statsInterval);
      this._statsTimer.unref();
    }
    if (o.maxMemory !== null) {
      this._memoryTimer = setInterval(() => this._sampleMemory(), MEMORY_INTERVAL);
      this._memoryTimer.unref();
    }
    for (let i = 0; i < o.workers; i++) this._spawnMember(this._addSlot(), 'start');
    return this;
  }

  // Replaces every worker, a batch at a time; resolves once all are replaced, rejects (and keeps
  // the remaining old workers) if a replacement fails. Asked during a reload, it runs after it;
  // requests made while one is waiting share that one.
  reload() {
    const waiting = this._queue.find((op) => op.kind === 'reload');
    if (waiting) return waiting.promise;
    return this._enqueue('reload', () => this._reload());
  }

  scale(workers) {
    let n;
    try {
      n = workerCount(workers, 'workers');
    } catch (err) {
      return Promise.reject(err);
    }
    return this._enqueue('scale', () => this._scale(n));
  }

  // Stops respawning, drains every worker (each killed at the drain timeout if still there) and
  // resolves with { killed } once all have exited.
  shutdown() {
    if (this._stopped) return this._stopped;
    this._stopped = new Promise((resolve) => (this._resolveStopped = resolve));
    this.state = 'stopping';
    clearInterval(this._memoryTimer);
    this._cancelRespawns();
    for (const op of this._queue.splice(0)) op.reject(stoppedError());
    this.emit('stopping');
    for (const record of this._records.values()) this._drain(record, 'shutdown');
    if (this._records.size === 0) process.nextTick(() => this._finish());
    return this._stopped;
  }

  // Shuts down at once: every worker is killed now.
  destroy() {
    const stopped = this.shutdown();
    for (const record of this._records.values()) this._kill(record);
    return stopped;
  }

  status() {
    const info = (record) => ({
      id: record.worker.id,
      pid: record.worker.process.pid,
      state: record.state,
      generation: record.generation,
      readySince: record.readyAt || null,
    });
    const workers = this._slots.map((slot) => ({
      slot: slot.index,
      restarts: slot.restarts,
      ...(slot.worker ? info(slot.worker) : { state: slot.timer ? 'waiting' : 'stopped' }),
    }));
    return {
      state: this.state,
      ready: this.state === 'running' && workers.some((w) => w.state === 'ready'),
      crashLoop: this.crashLoop,
      generation: this._generation,
      workers,
      draining: [...this._records.values()].filter((r) => r.state === 'draining').map(info),
    };
  }

  // status() with figures: a row for every live worker (serving, starting or draining) in slot
  // order, the slots without one, and the servers the workers share.
  stats() {
    const now = Date.now();
    const { state, ready, crashLoop, generation, workers: slots } = this.status();
    const live = [...this._records.values()].sort((a, b) => a.slot.index - b.slot.index || a.worker.id - b.worker.id);
    const members = live.map((record) => ({
      worker: record.worker,
      slot: record.slot.index,
      state: record.state,
      generation: record.generation,
      startedAt: record.startedAt,
      restarts: record.slot.restarts,
    }));
    const { workers, servers } = this._sampler.sample(members, now);
    const vacant = slots.filter((s) => s.id === undefined).map(({ slot, state, restarts }) => ({ slot, state, restarts }));
    return { at: now, implementation: cluster.implementation, state, ready, crashLoop, generation, workers, vacant, servers };
  }

  _addSlot() {
    const slot = { index: this._slots.length, worker: null, replacement: null, failures: 0, restarts: 0, timer: null, removed: false };
    this._slots.push(slot);
    return slot;
  }

  _spawn(slot, reason) {
    const worker = cluster.fork(this._workerEnv);
    const record = { worker, slot, generation: this._generation, state: 'starting', startedAt: Date.now(), readyAt: 0, over: 0, killed: false };
    record.ready = new Promise((resolve, reject) => Object.assign(record, { resolve, reject }));
    record.ready.catch(() => {}); // whoever needs the outcome awaits it
    this._records.set(worker, record);
    worker.on('error', (err) => this.emit('warning', err));
    if (this.options.ready === 'listening') worker.once('listening', () => this._onReady(record));
    else worker.on('message', (message) => message === 'ready' && this._onReady(record));
    record.readyTimer = setTimeout(() => this._onReadyTimeout(record), this.options.readyTimeout);
    worker.once('exit', (code, signal) => this._onExit(record, code, signal));
    // As cluster's 'fork': on the next tick, so that listeners added after supervise() see it.
    process.nextTick(() => this.emit('spawn', worker, { slot: slot.index, reason }));
    return record;
  }

  _spawnMember(slot, reason) {
    slot.worker = this._spawn(slot, reason);
  }

  _onReady(record) {
    if (record.state !== 'starting') return;
    clearTimeout(record.readyTimer);
    record.state = 'ready';
    record.readyAt = Date.now();
    this.emit('workerReady', record.worker, { slot: record.slot.index });
    record.resolve();
    if (this.state === 'starting' && this._slots.every((slot) => slot.worker?.state === 'ready')) {
      this.state = 'running';
      this.emit('ready');
    }
  }

  _onReadyTimeout(record) {
    const err = supervisorError('ERR_RUST_CLUSTER_READY_TIMEOUT', `${describeWorker(record.worker)} was not ready within ${this.options.readyTimeout} ms`);
    const { slot } = record;
    const member = slot.worker === record;
    this._drain(record, 'readyTimeout', err);
    // A serving slot's worker that never got ready failed like one that crashed.
    if (member) this._failed(slot, record);
  }

  // Takes `record` out of the rotation (worker.disconnect()) and kills it at the drain timeout.
  _drain(record, reason, err = stoppedError()) {
    if (record.state === 'draining' || !this._records.has(record.worker)) return;
    if (record.state === 'starting') {
      clearTimeout(record.readyTimer);
      record.reject(err);
    }
    record.state = 'draining';
    const { slot } = record;
    if (slot.worker === record) slot.worker = null;
    if (slot.replacement === record) slot.replacement = null;
    this.emit('drain', record.worker, { slot: slot.index, reason });
    if (record.worker.isConnected()) record.worker.disconnect();
    record.killTimer = setTimeout(() => this._kill(record), this.options.drainTimeout);
  }

  _kill(record) {
    record.killed = true;
    record.worker.process.kill('SIGKILL');
  }

  _onExit(record, code, signal) {
    this._records.delete(record.worker);
    clearTimeout(record.readyTimer);
    clearTimeout(record.killTimer);
    const { slot } = record;
    const expected = record.state === 'draining';
    if (record.state === 'starting') {
      record.reject(supervisorError('ERR_RUST_CLUSTER_WORKER_EXIT', `${describeWorker(record.worker)} exited (${signal ?? code}) before it was ready`));
    }
    if (this.state === 'stopping' && record.killed) this._killedInShutdown++;
    this.emit('exit', record.worker, code, signal, { slot: slot.index, expected, killed: record.killed });
    if (!expected) {
      if (slot.replacement === record) slot.replacement = null; // the reload sees it fail
      else {
        if (slot.worker === record) slot.worker = null;
        this._failed(slot, record);
      }
    }
    if (this.state === 'stopping' && this._records.size === 0) this._finish();
  }

  // An unexpected exit (or a start that never got ready): counts toward the crash loop, and the
  // slot is refilled after its backoff unless a replacement is already on its way.
  _failed(slot, record) {
    const now = Date.now();
    const { backoff, maxRestarts, restartWindow } = this.options;
    if (record.readyAt && now - record.readyAt >= backoff.reset) slot.failures = 0;
    slot.failures++;
    this._exits.push(now);
    while (this._exits[0] <= now - restartWindow) this._exits.shift();
    if (!this.crashLoop && this._exits.length > maxRestarts) {
      this.crashLoop = true;
      this._cancelRespawns();
      this.emit('crashLoop', { exits: this._exits.length, window: restartWindow });
    }
    if (!slot.replacement) this._respawnLater(slot);
  }

  _cancelRespawns() {
    for (const slot of this._slots) {
      clearTimeout(slot.timer);
      slot.timer = null;
    }
  }

  _respawnLater(slot) {
    if (slot.removed || slot.timer || slot.worker || this.crashLoop || this.state === 'stopping' || this.state === 'stopped') return;
    const { min, max } = this.options.backoff;
    const delay = Math.min(max, min * 2 ** Math.max(0, slot.failures - 1));
    slot.timer = setTimeout(() => {
      slot.timer = null;
      slot.restarts++;
      this._spawnMember(slot, 'respawn');
    }, delay);
    this.emit('respawn', { slot: slot.index, delay, failures: slot.failures });
  }

  // Starts a replacement for the slot's worker, waits until it is ready, then puts it in the slot
  // and drains the old one. If the replacement fails, the old worker keeps serving.
  async _replace(slot, reason) {
    const record = this._spawn(slot, reason);
    slot.replacement = record;
    try {
      await record.ready;
    } catch (err) {
      this._drain(record, 'replacementFailed', err);
      this._respawnLater(slot); // in case the old worker died meanwhile
      throw err;
    }
    const old = slot.worker;
    slot.replacement = null;
    slot.worker = record;
    if (old) this._drain(old, reason);
  }

  async _reload() {
    const generation = ++this._generation;
    const { reloadBatch } = this.options;
    this.emit('reloading', { generation });
    let replaced = 0;
    for (;;) {
      const batch = this._slots.filter((slot) => slot.worker && slot.worker.generation < generation).slice(0, reloadBatch);
      if (batch.length === 0) break;
      const results = await Promise.allSettled(batch.map((slot) => this._replace(slot, 'reload')));
      replaced += results.filter((r) => r.status === 'fulfilled').length;
      const failure = results.find((r) => r.status === 'rejected');
      if (failure) {
        const cause = failure.reason;
        if (cause.code === 'ERR_RUST_CLUSTER_STOPPED') throw cause;
        const err = supervisorError('ERR_RUST_CLUSTER_RELOAD_FAILED', `reload aborted after ${replaced} of the workers were replaced: ${cause.message}`, { cause, replaced });
        this.emit('reloadFailed', err);
        throw err;
      }
    }
    this.emit('reloaded', { generation, replaced });
    return { replaced };
  }

  async _scale(n) {
    const started = [];
    while (this._slots.length < n) {
      const slot = this._addSlot();
      this._spawnMember(slot, 'scale');
      started.push(slot.worker.ready);
    }
    while (this._slots.length > n) {
      const slot = this._slots.pop();
      slot.removed = true;
      clearTimeout(slot.timer);
      for (const record of [slot.worker, slot.replacement]) if (record) this._drain(record, 'scale');
    }
    await Promise.allSettled(started);
    return { workers: n };
  }

  _enqueue(kind, run) {
    if (this.state === 'stopping' || this.state === 'stopped') return Promise.reject(stoppedError());
    const op = { kind, run };
    op.promise = new Promise((resolve, reject) => Object.assign(op, { resolve, reject }));
    this._queue.push(op);
    this._pump();
    return op.promise;
  }

  async _pump() {
    if (this._running) return;
    while (this._queue.length > 0) {
      const op = (this._running = this._queue.shift());
      try {
        op.resolve(await op.run());
      } catch (err) {
        op.reject(err);
      }
    }
    this._running = null;
  }

  _sampleMemory() {
    const limit = this.options.maxMemory * 1024 * 1024;
    const members = this._slots.map((slot) => slot.worker).filter((record) => record && record.state === 'ready' && !record.replacing);
    const { figures } = readFigures(members.map((record) => record.worker));
    for (const record of members) {
      const { slot } = record;
      const rss = figures.get(record.worker).rss ?? 0;
      record.over = rss > limit ? record.over + 1 : 0;
      if (record.over < MEMORY_SAMPLES) continue;
      record.replacing = true;
      this.emit('memoryLimit', record.worker, { slot: slot.index, rss, limit });
      const replace = () => (slot.worker === record ? this._replace(slot, 'memory') : undefined);
      this._enqueue('memory', replace).catch((err) => {
        if (err.code === 'ERR_RUST_CLUSTER_STOPPED') return;
        record.replacing = false; // tried again at the next samples
        this.emit('warning', err);
      });
    }
  }

  async _finish() {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    clearInterval(this._statsTimer);
    this._probe?.close();
    this._metrics?.close();
    await this._notified;
    const summary = { killed: this._killedInShutdown };
    this.emit('stopped', summary);
    this._resolveStopped(summary);
  }
}

// Starts a supervised set of workers running `options.exec`.
function supervise(options) {
  return new Supervisor(options).start();
}

module.exports = { supervise, Supervisor, describeWorker };
