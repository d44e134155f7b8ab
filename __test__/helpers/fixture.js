'use strict';
// Runs a fixture program that reports what it observed as JSON lines on stdout (its workers and
// children write to the same stdout); everything it started is killed after the test.
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { until } = require('./wait');

const ROOT = path.join(__dirname, '..', '..');

function matcher(match) {
  if (typeof match === 'function') return match;
  const fields = typeof match === 'string' ? { type: match } : match;
  return (report) => Object.entries(fields).every(([k, v]) => report[k] === v);
}

// SIGKILLs a reported pid, unless it has gone and the pid now runs something outside `dir`.
function killIfFixture(pid, dir) {
  try {
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) return;
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

// Starts `node [...execArgv] file [...args]` in `cwd` (the project root by default); `fds` go to
// the program as fds 3 and up.
function startFixture(t, file, { env = {}, args = [], execArgv = [], cwd = ROOT, fds = [] } = {}) {
  const name = path.basename(file);
  const child = spawn(process.execPath, [...execArgv, file, ...args], {
    cwd,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe', ...fds],
  });
  const fixture = { child, reports: [], stderr: '', pids: new Set([child.pid]), closed: false };
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let report;
    try {
      report = JSON.parse(line);
    } catch {
      return; // not a report
    }
    if (Number.isInteger(report.pid)) fixture.pids.add(report.pid);
    for (const pid of report.pids || []) fixture.pids.add(pid);
    fixture.reports.push(report);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => { fixture.stderr += chunk; });
  // stdout closes once the primary and every worker (they inherit it) have gone.
  child.stdout.on('close', () => { fixture.closed = true; });
  fixture.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));

  // All reports matching `match` (a type, fields to equal, or a predicate), once there are `count`.
  fixture.waitAll = (match, count, { timeout = 10_000 } = {}) => {
    const matches = matcher(match);
    const what = `${count} × ${typeof match === 'function' ? match : JSON.stringify(match)} from ${name}`;
    return until(() => {
      const found = fixture.reports.filter(matches);
      if (found.length >= count) return found;
      if (fixture.closed) throw new Error(`${name} ended before ${what}`);
      return null;
    }, { timeout, what }).catch((err) => {
      err.message += `\nstderr of ${name}: ${fixture.stderr}`;
      throw err;
    });
  };
  fixture.waitFor = async (match, options) => (await fixture.waitAll(match, 1, options))[0];
  fixture.all = (type) => fixture.reports.filter((r) => r.type === type);
  fixture.indexOf = (match) => fixture.reports.findIndex(matcher(match));

  t.after(() => {
    child.kill('SIGKILL');
    for (const pid of fixture.pids) killIfFixture(pid, path.dirname(file));
    child.stdout.destroy();
    child.stderr.destroy();
  });
  return fixture;
}

module.exports = { startFixture };
