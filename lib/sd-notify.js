'use strict';
// systemd's notify protocol (sd_notify(3)) for a supervisor: READY=1 once every worker is ready,
// RELOADING=1 and READY=1 around each reload, STOPPING=1 when it shuts down, STATUS= for people.
//
// A message is one datagram of VAR=VALUE lines sent to the unix socket that NOTIFY_SOCKET names.
// Node cannot send on a unix datagram socket: the Rust core sends it from this process, so it
// carries this process's credentials, which the default NotifyAccess=main requires of the main
// PID. Without the core (the fallback), each message goes through systemd's own `systemd-notify
// --pid`, one process at a time so that they arrive in order; as a user other than root the kernel
// refuses to forge the credentials there, and the unit needs NotifyAccess=all.
const { spawn } = require('child_process');
const core = require('./core');

// Sends one message through the core; `fail` gets the error.
function sendNative(socket, fields, fail) {
  const message = Object.entries({ MAINPID: process.pid, ...fields }).map(([key, value]) => `${key}=${value}`).join('\n');
  try {
    require('./native').binding.notify(socket, message);
  } catch (err) {
    fail(err);
  }
  return Promise.resolve();
}

// Sends one message through `command` (systemd-notify), resolved once it has been read.
function sendCommand(command, socket, fields, fail) {
  return new Promise((resolve) => {
    const args = [`--pid=${process.pid}`, ...Object.entries(fields).map(([key, value]) => `${key}=${value}`)];
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: socket } });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
    child.on('error', (err) => {
      fail(err.code === 'ENOENT' ? new Error(`NOTIFY_SOCKET is set but ${command} was not found: systemd is not notified`) : err);
      resolve();
    });
    child.on('close', (code) => {
      if (code !== 0) fail(new Error(`${command} ${args.join(' ')} exited with ${code}: ${stderr.trim()}`));
      resolve();
    });
  });
}

// A function that sends `{ VAR: value }` fields and resolves once they are sent, or null when
// there is no NOTIFY_SOCKET. A failure is reported once to `onError`, and sending stops.
function createNotifier({ socket = process.env.NOTIFY_SOCKET, command = 'systemd-notify', onError = () => {} } = {}) {
  if (!socket) return null;
  let chain = Promise.resolve();
  let failed = false;
  function fail(err) {
    if (failed) return;
    failed = true;
    onError(err);
  }
  const send = core.active() === 'rust' ? (fields) => sendNative(socket, fields, fail) : (fields) => sendCommand(command, socket, fields, fail);
  return function notify(fields) {
    chain = chain.then(() => (failed ? undefined : send(fields)));
    return chain;
  };
}

// CLOCK_MONOTONIC in µs, which systemd's Type=notify-reload wants with RELOADING=1 (libuv's
// hrtime reads the same clock).
function monotonicMicros() {
  return String(process.hrtime.bigint() / 1000n);
}

// Tells systemd about `supervisor`'s transitions through `notify` (from createNotifier).
function notifySupervisor(supervisor, notify) {
  const status = () => `${supervisor.status().workers.filter((w) => w.state === 'ready').length} workers ready`;
  supervisor.on('ready', () => notify({ READY: 1, STATUS: status() }));
  supervisor.on('reloading', () => notify({ RELOADING: 1, MONOTONIC_USEC: monotonicMicros(), STATUS: 'reloading' }));
  supervisor.on('reloaded', () => notify({ READY: 1, STATUS: `reloaded, ${status()}` }));
  supervisor.on('reloadFailed', (err) => notify({ READY: 1, STATUS: `reload failed (${err.message}), ${status()}` }));
  supervisor.on('crashLoop', ({ exits, window }) => notify({ STATUS: `crash loop: ${exits} exits within ${window} ms, not restarting` }));
  supervisor.on('stopping', () => notify({ STOPPING: 1, STATUS: 'draining workers' }));
}

module.exports = { createNotifier, notifySupervisor };
