'use strict';
// Preloaded (`--require`) into every worker the supervisor starts, so that a graceful drain drops
// no request and the user's script stays unchanged.
//
// The supervisor drains a worker with `worker.disconnect()`: the primary stops handing it
// connections and Node's worker code closes its servers. Since Node 19, `http.Server#close()` also
// destroys every idle keep-alive connection at once, which races a client that is just sending
// its next request on one (the client sees ECONNRESET), and a connection accepted but not yet
// parsed counts as idle too. So from the moment the primary's disconnect arrives, this worker
// never closes an idle connection itself: every response it writes says `Connection: close`, each
// client closes after its next response and reconnects to a worker still in the rotation. What is
// left at the drain timeout the supervisor kills with the process.
const cluster = require('cluster');

function install() {
  const http = require('http');
  const https = require('https');
  let draining = false;

  // Node's own worker code registered its 'internalMessage' listener at startup; ours must run
  // before it closes the servers.
  process.prependListener('internalMessage', (message) => {
    if (message?.cmd === 'NODE_CLUSTER' && message.act === 'disconnect') draining = true;
  });

  // https.Server copies http's method at load time, so both prototypes are wrapped.
  for (const Server of new Set([http.Server, https.Server])) {
    const closeIdleConnections = Server.prototype.closeIdleConnections;
    Server.prototype.closeIdleConnections = function () {
      if (!draining) closeIdleConnections.call(this);
    };
  }

  // Every response goes through writeHead (res.end() and res.write() call it implicitly).
  const writeHead = http.ServerResponse.prototype.writeHead;
  http.ServerResponse.prototype.writeHead = function (...args) {
    if (draining) this.shouldKeepAlive = false;
    return writeHead.apply(this, args);
  };

  // A terminal's Ctrl-C reaches the whole process group; the supervisor turns it into a drain of
  // every worker, so a worker does not die of it mid-request.
  process.on('SIGINT', () => {});
}

// Forked children of a worker inherit its execArgv, and with it this file: they are left alone.
if (cluster.isWorker) install();
