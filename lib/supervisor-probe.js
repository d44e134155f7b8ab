'use strict';
// The opt-in HTTP endpoint a Kubernetes probe (or a load balancer's health check) reads:
// GET /ready answers 200 while the supervisor is up and at least one worker is ready, 503 before
// that, while it shuts down and while no worker is ready; GET /live answers 200 while the
// supervisor runs. Both carry the supervisor's status as JSON.
const { serveHttp } = require('./supervisor-http');

function probeServer(supervisor, address, onError) {
  return serveHttp((req, res) => {
    const status = supervisor.status();
    let code = 404;
    if (req.url === '/live') code = 200;
    if (req.url === '/ready') code = status.ready ? 200 : 503;
    res.writeHead(code, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(code === 404 ? '{"error":"not found: GET /ready or /live"}\n' : `${JSON.stringify(status)}\n`);
  }, address, onError);
}

module.exports = { probeServer };
