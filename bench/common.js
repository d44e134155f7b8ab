'use strict';
// Shared helpers for the benchmark suite: which implementation to load, CPU measurement,
// statistics, running one measurement in a fresh Node process, and the result table.
//
// Every benchmark file exports `{ name, title, cases(opts) }` for run.js, and, when executed
// directly with IMPL=rust|node and a JSON argument, performs ONE measurement with that
// implementation and prints its result as the last stdout line (`RESULT {...}`).
const path = require('path');
const { spawn } = require('child_process');

const IMPLS = ['rust', 'node'];

// The implementation under test for this process (IMPL env, default rust).
function impl() {
  const name = process.env.IMPL || 'rust';
  if (!IMPLS.includes(name)) throw new Error(`IMPL must be rust or node, not ${name}`);
  return name;
}

function selfRequire(sub) {
  try {
    return require(sub ? `rust-cluster/${sub}` : 'rust-cluster');
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err;
    return require(path.join(__dirname, '..', sub || ''));
  }
}

// `cluster` of the chosen implementation.
function loadCluster(name = impl()) {
  return name === 'node' ? require('cluster') : selfRequire('');
}

// `child_process.fork` of the chosen implementation.
function loadFork(name = impl()) {
  return name === 'node' ? require('child_process').fork : selfRequire('child_process').fork;
}

// CPU time (user+system, µs) of this process, all threads.
function cpuMicros() {
  const u = process.cpuUsage();
  return u.user + u.system;
}

function nowMs() {
  return Number(process.hrtime.bigint()) / 1e6;
}

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

// Measurement-side: parse the JSON argument and print the result for the driver.
function measureArgs() {
  return JSON.parse(process.argv[2] || '{}');
}

function report(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

// Run a measurement script in a fresh Node process; resolves with its RESULT object.
// Rejects (with the tail of stderr) on non-zero exit, a missing RESULT or the timeout.
function runNode(script, impl, args, { timeoutMs = 120000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, JSON.stringify(args)], {
      env: { ...process.env, ...env, IMPL: impl },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group, so a timeout can kill the workers too
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
      reject(new Error(`timeout after ${timeoutMs} ms; stderr: ${tail(err)}`));
    }, timeoutMs);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      // Leftover workers of a crashed primary.
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {}
      const line = out.split('\n').reverse().find((l) => l.startsWith('RESULT '));
      if (code === 0 && line) return resolve(JSON.parse(line.slice(7)));
      reject(new Error(`exit ${signal || code}${line ? '' : ', no result'}; stderr: ${tail(err) || tail(out)}`));
    });
  });
}

function tail(s, n = 600) {
  s = String(s).trim();
  return s.length > n ? '…' + s.slice(-n) : s;
}

// ---- formatting ----

function fmt(v) {
  if (v == null || Number.isNaN(v)) return '-';
  if (typeof v === 'string') return v;
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

function table(rows, headers) {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c == null ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

// Resolves once `emitter` emits `event`, rejecting on the child's 'exit'/'error'.
function once(emitter, event, predicate = () => true) {
  return new Promise((resolve, reject) => {
    const on = (...a) => {
      if (!predicate(...a)) return;
      cleanup();
      resolve(a);
    };
    const bad = (code, sig) => {
      cleanup();
      reject(new Error(`child ${event === 'exit' ? '' : 'exited'} (${code ?? ''} ${sig ?? ''}) while waiting for ${event}`));
    };
    const cleanup = () => {
      emitter.removeListener(event, on);
      if (event !== 'exit') emitter.removeListener('exit', bad);
      emitter.removeListener('error', bad);
    };
    emitter.on(event, on);
    if (event !== 'exit') emitter.on('exit', bad);
    emitter.on('error', bad);
  });
}

module.exports = {
  IMPLS,
  impl,
  loadCluster,
  loadFork,
  cpuMicros,
  nowMs,
  median,
  percentile,
  measureArgs,
  report,
  runNode,
  fmt,
  table,
  once,
};

// ---- message payloads (shared by the parents and the stock child) ----

const PAYLOAD_CHARS = { small: 21, '1k': 1000, '64k': 65500 };
const payloadStrings = {};

// A fresh message object of the given kind: {"i":12345,"s":"…"} is ~40 B for 'small'.
function payload(kind, i) {
  const s = (payloadStrings[kind] ??= 'abcdefghijklmnopqrstuvwxyz'.repeat(Math.ceil(PAYLOAD_CHARS[kind] / 26)).slice(0, PAYLOAD_CHARS[kind]));
  return { i, s };
}

module.exports.payload = payload;
