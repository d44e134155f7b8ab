'use strict';
// The `rust-cluster` command: `rust-cluster [options] app.js [args…]` runs app.js under a
// supervisor (lib/supervisor.js), turns signals into reloads and shutdowns, says on stderr what
// happens to each worker, and exits with a status that tells how it ended.
// `rust-cluster status|reload|scale|stop <socket>` asks one that runs (lib/control-cli.js).
const path = require('path');
const { DEFAULTS, POLICIES, READY, normalize } = require('./supervisor-options');
const { supervise, describeWorker } = require('./supervisor');
const { runControl, COMMANDS } = require('./control-cli');

const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 };

const HELP = `Usage: rust-cluster [options] <app.js> [app arguments...]
       rust-cluster status|reload|stop <socket> [--json]
       rust-cluster scale <socket> <n|max> [--json]

Runs app.js, an unchanged server script, in a cluster of workers on rust-cluster's primary:
restarts a worker that dies, reloads workers one by one without dropping a request, and drains
them all on shutdown. Everything after app.js is passed to it.

Options:
  -w, --workers <n|max>          workers to run (default: max, one per available CPU)
      --policy <${POLICIES.join('|')}>
                                 how connections reach the workers (default: rr)
      --ready <${READY.join('|')}>  a worker is ready at its first 'listening', or once it
                                 calls process.send('ready') (default: ${DEFAULTS.ready})
      --ready-timeout <ms>       a worker not ready by then has failed to start (default: ${DEFAULTS.readyTimeout})
      --drain-timeout <ms>       a draining worker still running after this is killed (default: ${DEFAULTS.drainTimeout})
      --reload-batch <n>         workers a reload replaces at a time (default: ${DEFAULTS.reloadBatch})
      --backoff <min,max[,reset]>
                                 delay before a dead worker is restarted, in ms: min, doubling with
                                 each failure up to max, back to min once a worker has stayed up
                                 for reset ms (default: ${Object.values(DEFAULTS.backoff).join(',')})
      --max-restarts <n>         more unexpected exits than this within the window is a crash loop:
                                 workers are no longer restarted and the command exits 1 (default: ${DEFAULTS.maxRestarts})
      --restart-window <ms>      (default: ${DEFAULTS.restartWindow})
      --max-memory <MB>          replace, gracefully, a worker whose RSS stays above this
                                 (sampled twice a second; default: no limit)
      --probe <[host:]port>      serve GET /ready (200 or 503) and GET /live for health checks
                                 (default: off; all interfaces unless a host is given)
      --metrics <[host:]port>    serve Prometheus metrics at GET /metrics (default: off;
                                 127.0.0.1 unless a host is given)
      --control <path>           listen on a unix socket, usable by this user only, for the
                                 commands below (default: off)
  -h, --help                     show this help
  -v, --version                  show the version

Commands, to a cluster started with --control <socket>:
  status <socket>                its workers: state, uptime, restarts, CPU, memory, messages and
                                 bytes on their IPC channels, connections handed to them
  reload <socket>                a rolling reload; ends when it is complete (exit 1 if aborted)
  scale <socket> <n|max>         run n workers
  stop <socket>                  a graceful shutdown; ends when every worker has left
  --json                         the answer as JSON, for scripts

Signals: SIGHUP or SIGUSR2 reloads (a reload asked during one runs after it); SIGTERM or SIGINT
shuts down gracefully, and a second SIGINT stops at once. Under systemd (NOTIFY_SOCKET set) it
sends READY=1, RELOADING=1 and STOPPING=1 through systemd-notify.

Exit status: 0 when every worker drained, 1 after a crash loop or when a worker had to be killed
at the drain timeout, 2 for a usage error, 130 after a second SIGINT. A command exits 0 when the
cluster did what was asked, 1 when it could not be reached or refused, 2 for a usage error.
`;

class UsageError extends Error {}

// Parsers of option values by what they take; a value of the wrong form is a usage error that
// names the option, a number out of range is left to the option's check.
function whole(what) {
  return (value, flag) => {
    if (!/^\d+$/.test(value)) throw new UsageError(`${flag} takes ${what}, not '${value}'`);
    return Number(value);
  };
}

const ms = whole('a whole number of milliseconds');
const count = whole('a whole number');

function workers(value, flag) {
  return value === 'max' ? value : whole("a whole number or 'max'")(value, flag);
}

function backoff(value, flag) {
  const parts = value.split(',');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new UsageError(`${flag} takes min,max or min,max,reset in milliseconds, not '${value}'`);
  }
  const [min, max, reset = DEFAULTS.backoff.reset] = parts.map(Number);
  return { min, max, reset };
}

function address(value, flag) {
  const colon = value.lastIndexOf(':');
  const host = colon < 0 ? undefined : value.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = value.slice(colon + 1);
  if (!/^\d+$/.test(port) || host === '') throw new UsageError(`${flag} takes [host:]port, not '${value}'`);
  return { host, port: Number(port) };
}

const FLAGS = {
  '--workers': ['workers', workers],
  '--policy': ['policy', String],
  '--ready': ['ready', String],
  '--ready-timeout': ['readyTimeout', ms],
  '--drain-timeout': ['drainTimeout', ms],
  '--reload-batch': ['reloadBatch', count],
  '--backoff': ['backoff', backoff],
  '--max-restarts': ['maxRestarts', count],
  '--restart-window': ['restartWindow', ms],
  '--max-memory': ['maxMemory', whole('a whole number of megabytes')],
  '--probe': ['probe', address],
  '--metrics': ['metrics', address],
  '--control': ['control', (value) => path.resolve(value)],
};
const SHORT = { '-w': '--workers', '-h': '--help', '-v': '--version' };
const FLAG_OF = Object.fromEntries(Object.entries(FLAGS).map(([flag, [key]]) => [key, flag]));

// `status|reload|stop <socket> [--json]`, `scale <socket> <n|max> [--json]` -> { control }.
function parseControl([command, ...rest]) {
  const json = rest.includes('--json');
  const operands = rest.filter((arg) => arg !== '--json');
  const option = operands.find((arg) => arg.startsWith('-'));
  if (option) throw new UsageError(`unknown option '${option}' for ${command}`);
  const scale = command === 'scale';
  if (operands.length !== (scale ? 2 : 1)) throw new UsageError(`usage: rust-cluster ${command} <socket>${scale ? ' <n|max>' : ''} [--json]`);
  const control = { command, path: path.resolve(operands[0]), json };
  if (scale) {
    const count = operands[1];
    if (count !== 'max' && !/^\d+$/.test(count)) throw new UsageError(`bad worker count '${count}': scale takes a whole number or 'max'`);
    control.workers = count === 'max' ? count : Number(count);
  }
  return { control };
}

// argv (without node and the command) -> { help } | { version } | { control } for a command to a
// running cluster | { options } for supervise(). Options end at the app's path (or `--`): what
// follows is the app's own. (An app named like a command is run as ./status.)
function parse(argv) {
  if (COMMANDS.includes(argv[0])) return parseControl(argv);
  const options = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    const eq = arg.indexOf('=');
    const name = SHORT[arg] ?? (eq < 0 ? arg : arg.slice(0, eq));
    if (name === '--help') return { help: true };
    if (name === '--version') return { version: true };
    const flag = FLAGS[name];
    if (!flag) throw new UsageError(`unknown option '${arg}'`);
    const value = eq < 0 || SHORT[arg] ? argv[++i] : arg.slice(eq + 1);
    if (value === undefined) throw new UsageError(`option '${name}' needs a value`);
    options[flag[0]] = flag[1](value, name);
  }
  if (i >= argv.length) throw new UsageError('no app given: rust-cluster [options] <app.js> [args...]');
  const exec = path.resolve(argv[i]);
  try {
    require.resolve(exec);
  } catch {
    throw new UsageError(`cannot find the app '${argv[i]}'`);
  }
  options.exec = exec;
  options.args = argv.slice(i + 1);
  options.notify = true;
  try {
    return { options: normalize(options, (key) => FLAG_OF[key] ?? key) };
  } catch (err) {
    throw new UsageError(err.message);
  }
}

function exitStatus(code, signal) {
  return signal ?? `code ${code}`;
}

// Says on stderr what happens, one line per transition.
function log(supervisor, write) {
  const say = (line) => write(`rust-cluster: ${line}\n`);
  supervisor.on('spawn', (w, { slot, reason }) => say(`${describeWorker(w)} started in slot ${slot} (${reason})`));
  supervisor.on('workerReady', (w) => say(`${describeWorker(w)} ready`));
  supervisor.on('ready', () => say(`all ${supervisor.status().workers.length} workers ready`));
  supervisor.on('drain', (w, { reason }) => say(`${describeWorker(w)} draining (${reason})`));
  supervisor.on('exit', (w, code, signal, { expected, killed }) => {
    if (killed) say(`${describeWorker(w)} killed at the drain timeout`);
    else if (expected) say(`${describeWorker(w)} exited (${exitStatus(code, signal)})`);
    else say(`${describeWorker(w)} died (${exitStatus(code, signal)})`);
  });
  supervisor.on('respawn', ({ slot, delay }) => say(`slot ${slot} restarts in ${delay} ms`));
  supervisor.on('crashLoop', ({ exits, window }) => say(`crash loop: ${exits} unexpected exits within ${window} ms; workers are no longer restarted`));
  supervisor.on('reloading', () => say('reload started'));
  supervisor.on('reloaded', ({ replaced }) => say(`reload complete: ${replaced} workers replaced`));
  supervisor.on('reloadFailed', (err) => say(`${err.message}; the remaining workers keep serving`));
  supervisor.on('memoryLimit', (w, { rss, limit }) => say(`${describeWorker(w)} uses ${Math.round(rss / 2 ** 20)} MB, over ${limit / 2 ** 20} MB: replacing it`));
  supervisor.on('stopping', () => say('shutting down: draining the workers'));
  supervisor.on('stopped', ({ killed }) => say(killed ? `stopped; ${killed} workers were killed at the drain timeout` : 'stopped; every worker drained'));
  supervisor.on('warning', (err) => say(`warning: ${err.message}`));
}

function main(argv = process.argv.slice(2), { stdout = process.stdout, stderr = process.stderr } = {}) {
  let parsed;
  try {
    parsed = parse(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    stderr.write(`rust-cluster: ${err.message}\nTry 'rust-cluster --help'.\n`);
    process.exitCode = EXIT.usage;
    return null;
  }
  if (parsed.help || parsed.version) {
    stdout.write(parsed.help ? HELP : `${require('../package.json').version}\n`);
    return null;
  }
  if (parsed.control) {
    runControl(parsed.control, { stdout, stderr }).then((status) => (process.exitCode = status));
    return null;
  }

  const supervisor = supervise(parsed.options);
  log(supervisor, (line) => stderr.write(line));

  let status = EXIT.ok;
  // However the shutdown was asked for: a signal, the control socket, a crash loop, an error.
  supervisor.once('stopped', ({ killed }) => process.exit(status === EXIT.ok && killed > 0 ? EXIT.failed : status));
  const shutdown = () => supervisor.shutdown();
  const reload = () => supervisor.reload().catch(() => {}); // the outcome is logged
  supervisor.on('crashLoop', () => {
    status = EXIT.failed;
    shutdown();
  });
  supervisor.on('error', (err) => {
    stderr.write(`rust-cluster: ${err.message}\n`);
    status = EXIT.failed;
    shutdown();
  });
  process.on('SIGHUP', reload);
  process.on('SIGUSR2', reload);
  process.on('SIGTERM', shutdown);
  let interrupted = false;
  process.on('SIGINT', () => {
    if (!interrupted) {
      interrupted = true;
      return shutdown();
    }
    stderr.write('rust-cluster: second SIGINT: stopping at once\n');
    status = EXIT.interrupted;
    supervisor.destroy();
  });
  return supervisor;
}

module.exports = { main, parse, HELP, EXIT };
