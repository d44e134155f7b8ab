'use strict';
// HTTP load on loopback that counts every request that did not get a whole 200 response: a reset,
// a refused connection, a hang-up, another status. `connections` clients each send one request
// after another until stop(): with 'keep-alive' they share an http.Agent that reuses connections
// (the case a server closing an idle connection breaks), with 'close' each request has its own
// connection and `Connection: close`. Used by the supervisor's load test and bench/reload.js.
const http = require('http');

function startLoad({ port, host = '127.0.0.1', connections = 8, mode = 'keep-alive' }) {
  if (mode !== 'keep-alive' && mode !== 'close') throw new Error(`mode must be 'keep-alive' or 'close', not ${mode}`);
  const agent = mode === 'keep-alive' ? new http.Agent({ keepAlive: true, maxSockets: connections }) : false;
  const headers = mode === 'close' ? { connection: 'close' } : {};
  const stats = { mode, ok: 0, failed: 0, errors: {}, workers: {}, versions: {} };
  let stopping = false;

  function fail(reason) {
    stats.failed++;
    stats.errors[reason] = (stats.errors[reason] ?? 0) + 1;
  }

  // Each request counts once: as a failure when the request errs or its response is cut short.
  function request() {
    return new Promise((resolve) => {
      let settled = false;
      const settle = (failure, res) => {
        if (settled) return;
        settled = true;
        if (failure) fail(failure);
        else {
          stats.ok++;
          const worker = res.headers['x-worker'] ?? 'unknown';
          const version = res.headers['x-version'] ?? 'unknown';
          stats.workers[worker] = (stats.workers[worker] ?? 0) + 1;
          stats.versions[version] = (stats.versions[version] ?? 0) + 1;
        }
        resolve();
      };
      const req = http.get({ host, port, path: '/', agent, headers }, (res) => {
        res.resume();
        res.on('error', (err) => settle(err.code ?? err.message));
        res.on('close', () => {
          if (!res.complete) settle('incomplete response');
          else settle(res.statusCode === 200 ? null : `status ${res.statusCode}`, res);
        });
      });
      req.on('error', (err) => settle(err.code ?? err.message));
    });
  }

  const clients = Array.from({ length: connections }, async () => {
    while (!stopping) await request();
  });

  return {
    stats,
    // Resolves with the stats once every client's last request has ended.
    async stop() {
      stopping = true;
      await Promise.all(clients);
      if (agent) agent.destroy();
      return stats;
    },
  };
}

module.exports = { startLoad };
