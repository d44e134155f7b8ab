'use strict';
// For the supervisor's tests: free ports, single HTTP requests, and the `rust-cluster` command run
// as a child whose stderr lines (its log) can be waited for.
const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { until } = require('./wait');
const { freePort } = require('./ports');

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'rust-cluster.js');
const FIXTURES = path.join(__dirname, '..', 'fixtures', 'supervisor');

// One request on its own connection: { status, headers, body }.
function get(port, urlPath = '/') {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

// SIGKILLs `pid` if it is still one of our workers (their argv names the drain preload), not a
// process that reused the number.
function killWorker(pid) {
  try {
    if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('worker-drain.js')) process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

// Runs `rust-cluster ...args`; everything it started is killed after the test.
function startCommand(t, args, { env = {}, detached = false } = {}) {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  const command = { child, lines: [], stdout: '' };
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (chunk) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop();
    command.lines.push(...parts);
  });
  child.stdout.setEncoding('utf8').on('data', (chunk) => (command.stdout += chunk));
  command.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let done = false;
  command.exited.then(() => (done = true));

  // The first log line from index `from` on that matches `pattern`: its index and the match.
  command.waitLine = (pattern, { from = 0, timeout } = {}) =>
    until(() => {
      const index = command.lines.findIndex((line, i) => i >= from && pattern.test(line));
      if (index >= 0) return { index, match: pattern.exec(command.lines[index]) };
      if (done) throw new Error(`rust-cluster exited before logging ${pattern}:\n${command.lines.join('\n')}`);
      return null;
    }, { timeout, what: `${pattern} in the log of rust-cluster` });
  command.count = (pattern) => command.lines.filter((line) => pattern.test(line)).length;
  // pids of the workers it has started, from its log.
  command.pids = () => command.lines.map((line) => /\(pid (\d+)\) started/.exec(line)).filter(Boolean).map((m) => Number(m[1]));

  t.after(() => {
    child.kill('SIGKILL');
    for (const pid of command.pids()) killWorker(pid);
  });
  return command;
}

module.exports = { ROOT, BIN, FIXTURES, freePort, get, startCommand, killWorker };
