'use strict';
// A port for a server a test starts later. Not one bound with port 0: that comes from the kernel's
// ephemeral range, and once closed any outgoing connection (a request of the test itself) may be
// given it as its source port, so the server's bind fails with EADDRINUSE. Below that range only
// an explicit bind takes a port.
const fs = require('node:fs');
const net = require('node:net');

const LOWEST = 10_000;

function ephemeralLow() {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return 32_768;
  }
}

const below = ephemeralLow();

// Whether a server can listen on `port` on every interface now.
function portFree(port) {
  return new Promise((resolve) => {
    const server = net.createServer().once('error', () => resolve(false));
    server.listen(port, () => server.close(() => resolve(true)));
  });
}

// Ports handed out by this process: two asked for in a row are never the same one.
const given = new Set();

async function freePort() {
  for (;;) {
    const port = LOWEST + Math.floor(Math.random() * (below - LOWEST));
    if (!given.has(port) && (await portFree(port))) {
      given.add(port);
      return port;
    }
  }
}

module.exports = { freePort, portFree };
