'use strict';
// The server of the reload benchmark, as a supervisor runs it: a plain HTTP server on PORT that
// names its worker in X-Worker. No cluster code of its own.
const http = require('http');

const pid = String(process.pid);
http
  .createServer((req, res) => {
    res.setHeader('X-Worker', pid);
    res.setHeader('Content-Type', 'text/plain');
    res.end('hello world\n');
  })
  .listen(Number(process.env.PORT), '127.0.0.1');
