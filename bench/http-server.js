'use strict';
// The cluster HTTP server of the cluster benchmark: primary (IMPL=rust|node, policy from
// NODE_CLUSTER_SCHED_POLICY) with WORKERS workers on 127.0.0.1:PORT. The primary prints READY
// once every worker listens and answers "cpu" on stdin with its own process.cpuUsage (µs,
// user+system, all threads); "stop" disconnects the workers and exits.
const http = require('http');
const c = require('./common');

const cluster = c.loadCluster();
const port = Number(process.env.PORT);

if (cluster.isWorker) {
  const pid = String(process.pid);
  http
    .createServer((req, res) => {
      res.setHeader('X-Worker', pid);
      res.setHeader('Content-Type', 'text/plain');
      res.end('hello world\n');
    })
    .listen(port, '127.0.0.1');
  process.on('disconnect', () => process.exit(0));
} else {
  const workers = Number(process.env.WORKERS || 2);
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening === workers) process.stdout.write(`READY ${cluster.schedulingPolicy}\n`);
  });
  cluster.on('exit', (w, code, sig) => {
    if (!w.exitedAfterDisconnect) {
      console.error(`worker ${w.process.pid} died (${code ?? sig})`);
      process.exit(1);
    }
  });
  for (let i = 0; i < workers; i++) cluster.fork();
  let buf = '';
  process.stdin.on('data', (d) => {
    buf += d;
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const cmd = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (cmd === 'cpu') process.stdout.write(`CPU ${c.cpuMicros()}\n`);
      if (cmd === 'stop') {
        cluster.removeAllListeners('exit');
        cluster.disconnect(() => process.exit(0));
        setTimeout(() => process.exit(0), 2000).unref();
      }
    }
  });
}
