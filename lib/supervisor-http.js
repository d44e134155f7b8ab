'use strict';
// The supervisor's own HTTP endpoints (the probe, the metrics): `handler` answers every request.
// An endpoint never keeps the supervisor alive, nor holds up its shutdown.
const http = require('http');

function serveHttp(handler, { host, port }, onError) {
  const server = http.createServer(handler);
  server.unref();
  server.keepAliveTimeout = 1000;
  server.on('error', onError);
  server.listen(port, host);
  return server;
}

module.exports = { serveHttp };
