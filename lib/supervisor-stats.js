'use strict';
// Figures for each supervised worker, read without involving the worker. On the Rust core they
// come from one binding.stats() call: RSS and CPU time from /proc, the frames and bytes each way on
// the worker's channel, the connections handed to it, and per server the connections accepted and
// those queued for a worker. On Node's own cluster (no core) only RSS and CPU time can be had,
// from /proc where there is one; the other figures are null.
const fs = require('fs');
const cluster = require('..');

// A worker's CPU % is over the time since its previous sample. Samples closer together than this
// share the previous window, so that a scrape right after a status request does not divide by ~0.
const CPU_WINDOW = 500;
// /proc counts CPU time in USER_HZ ticks: 100 per second on every architecture Node runs on.
const USER_HZ = 100;

// { rss, cpuSeconds } of `pid` from /proc, nulls where it cannot be read (gone, or no /proc).
function procUsage(pid) {
  try {
    // After `pid (comm) ` come fields 3 on; utime and stime are 14 and 15.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const rss = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return { rss: rss ? Number(rss[1]) * 1024 : null, cpuSeconds: (Number(fields[11]) + Number(fields[12])) / USER_HZ };
  } catch {
    return { rss: null, cpuSeconds: null };
  }
}

const UNAVAILABLE = { messagesIn: null, bytesIn: null, messagesOut: null, bytesOut: null, handed: null, pending: null };

// The figures of `workers` (cluster Workers) now: { figures: Map(worker -> figures), servers }.
// `in` is from the worker to the primary, `out` the other way.
function readFigures(workers) {
  if (cluster.implementation !== 'rust') {
    return { figures: new Map(workers.map((w) => [w, { ...procUsage(w.process.pid), ...UNAVAILABLE }])), servers: null };
  }
  const stats = require('./native').binding.stats();
  const byId = (list) => new Map(list.map((entry) => [entry.id, entry]));
  const channels = byId(stats.channels);
  const children = byId(stats.children);
  const handOffs = byId(stats.workers);
  const figures = new Map();
  for (const worker of workers) {
    const id = worker.process._id;
    const child = children.get(id);
    const channel = channels.get(id);
    const handed = handOffs.get(id);
    figures.set(worker, {
      rss: child?.rss ?? null,
      cpuSeconds: child?.cpuSeconds ?? null,
      // A worker whose channel has closed has no traffic left to count.
      messagesIn: channel?.framesIn ?? null,
      bytesIn: channel?.bytesIn ?? null,
      messagesOut: channel?.framesOut ?? null,
      bytesOut: channel?.bytesOut ?? null,
      // Only round-robin hands connections over (and reuseport, a leaving worker's backlog).
      handed: handed?.handed ?? 0,
      pending: handed?.unanswered ?? 0,
    });
  }
  const servers = stats.servers.map(({ key, accepted, waiting }) => ({ key, accepted, queued: waiting }));
  return { figures, servers };
}

// Turns supervised workers into rows of figures, keeping each worker's previous CPU sample.
class StatsSampler {
  constructor() {
    this._previous = new WeakMap(); // worker -> { at, cpuSeconds, percent }
  }

  // `members`: [{ worker, slot, state, generation, startedAt, restarts }] -> { workers, servers }.
  sample(members, now) {
    const { figures, servers } = readFigures(members.map((m) => m.worker));
    const workers = members.map(({ worker, slot, state, generation, startedAt, restarts }) => {
      const { cpuSeconds, ...rest } = figures.get(worker);
      return {
        slot,
        id: worker.id,
        pid: worker.process.pid,
        state,
        generation,
        uptime: (now - startedAt) / 1000,
        restarts,
        cpuPercent: this._cpuPercent(worker, startedAt, cpuSeconds, now),
        cpuSeconds,
        ...rest,
      };
    });
    return { workers, servers };
  }

  // The first window starts when the worker was forked, with no CPU time used.
  _cpuPercent(worker, startedAt, cpuSeconds, now) {
    if (cpuSeconds === null) return null;
    const previous = this._previous.get(worker) ?? { at: startedAt, cpuSeconds: 0, percent: null };
    const elapsed = now - previous.at;
    if (elapsed < CPU_WINDOW && previous.percent !== null) return previous.percent;
    const percent = elapsed > 0 ? (100_000 * (cpuSeconds - previous.cpuSeconds)) / elapsed : 0;
    if (elapsed >= CPU_WINDOW) this._previous.set(worker, { at: now, cpuSeconds, percent });
    return percent;
  }
}

module.exports = { StatsSampler, readFigures, CPU_WINDOW };
