'use strict';
// The opt-in metrics endpoint: GET /metrics answers the supervisor's stats() in Prometheus's text
// format. Per-worker metrics are labelled `worker` (cluster's worker id) and `pid`.
const { exposition, CONTENT_TYPE } = require('./prometheus');
const { serveHttp } = require('./supervisor-http');

const STATES = ['starting', 'ready', 'draining', 'waiting', 'stopped'];

// [name, type, help, the figure of a stats() worker row (null: not sampled)]
const WORKER_METRICS = [
  ['start_time_seconds', 'gauge', 'When the worker was started, in seconds since the Unix epoch.', (w, at) => at / 1000 - w.uptime],
  ['resident_memory_bytes', 'gauge', 'Resident set size of the worker process.', (w) => w.rss],
  ['cpu_seconds_total', 'counter', 'User and system CPU time the worker process has used.', (w) => w.cpuSeconds],
  ['cpu_usage_ratio', 'gauge', 'CPU the worker used since the previous sample, in cores (0.5 is half of one core).', (w) => (w.cpuPercent === null ? null : w.cpuPercent / 100)],
  ['ipc_received_messages_total', 'counter', "Messages the primary received from the worker on its IPC channel, cluster's own included.", (w) => w.messagesIn],
  ['ipc_received_bytes_total', 'counter', 'Bytes the primary received from the worker on its IPC channel.', (w) => w.bytesIn],
  ['ipc_sent_messages_total', 'counter', "Messages the primary sent to the worker on its IPC channel, cluster's own included.", (w) => w.messagesOut],
  ['ipc_sent_bytes_total', 'counter', 'Bytes the primary sent to the worker on its IPC channel.', (w) => w.bytesOut],
  ['connections_handed_total', 'counter', 'Connections the primary accepted and handed to the worker.', (w) => w.handed],
  ['connections_pending', 'gauge', 'Connections handed to the worker that it has not yet accepted.', (w) => w.pending],
];

const SERVER_METRICS = [
  ['connections_accepted_total', 'counter', 'Connections the primary accepted on a server its workers share.', (s) => s.accepted],
  ['connections_queued', 'gauge', 'Accepted connections waiting for a worker with room (the hand-off queue).', (s) => s.queued],
];

function family(name, type, help, samples) {
  return { name: `rust_cluster_${name}`, type, help, samples: samples.filter((s) => s.value !== null) };
}

// stats() -> the families of the exposition. Figures the implementation lacks (no native core:
// IPC and connections) are left out, and rust_cluster_info says which implementation it is.
function metricFamilies(stats) {
  const { at, workers, vacant, servers } = stats;
  const restarts = new Map([...workers, ...vacant].map((s) => [s.slot, s.restarts]));
  const flag = (on) => (on ? 1 : 0);
  return [
    family('info', 'gauge', "Always 1; `implementation` says what the primary runs on: 'rust' (the native core) or 'node' (Node's own cluster, without IPC and connection figures).", [{ labels: { implementation: stats.implementation }, value: 1 }]),
    family('ready', 'gauge', 'Whether the supervisor is running with at least one worker ready (1) or not (0).', [{ value: flag(stats.ready) }]),
    family('crash_loop', 'gauge', 'Whether a crash loop stopped the respawning of workers (1) or not (0).', [{ value: flag(stats.crashLoop) }]),
    family('reloads_total', 'counter', 'Rolling reloads started.', [{ value: stats.generation }]),
    family('workers', 'gauge', "Workers in each state; 'waiting' and 'stopped' count slots without a worker (a respawn pending, or none coming).", STATES.map((state) => ({
      labels: { state },
      value: [...workers, ...vacant].filter((w) => w.state === state).length,
    }))),
    family('slot_restarts_total', 'counter', 'Workers started again in a slot after an unexpected exit.', [...restarts].map(([slot, value]) => ({ labels: { slot }, value }))),
    ...WORKER_METRICS.map(([name, type, help, figure]) => family(`worker_${name}`, type, help, workers.map((w) => ({ labels: { worker: w.id, pid: w.pid }, value: figure(w, at) })))),
    ...SERVER_METRICS.map(([name, type, help, figure]) => family(`server_${name}`, type, help, (servers ?? []).map((s) => ({ labels: { server: s.key }, value: figure(s) })))),
  ];
}

function metricsServer(supervisor, address, onError) {
  return serveHttp((req, res) => {
    if (new URL(req.url, 'http://localhost').pathname !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' });
      return res.end('not found: GET /metrics\n');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' });
      return res.end('GET /metrics\n');
    }
    res.writeHead(200, { 'content-type': CONTENT_TYPE, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : exposition(metricFamilies(supervisor.stats())));
  }, address, onError);
}

module.exports = { metricsServer, metricFamilies };
