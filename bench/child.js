'use strict';
// The Node child used by the channel, latency, large-message and fork benchmarks. It only uses
// process.send / process.on('message'), so it is the same for both parents. The first
// message from the parent selects the mode.
const { payload, loadFork } = require('./common');

// BENCH_CHILD_LOADS=rust: this child loads rust-cluster, as a cluster worker does, and so batches
// its own sends.
if (process.env.BENCH_CHILD_LOADS) loadFork(process.env.BENCH_CHILD_LOADS);

let onMessage = (config) => {
  switch (config.cmd) {
    case 'sink': {
      // Count messages, ack every `ack` of them; the parent keeps at most 2 windows in flight.
      let n = 0;
      onMessage = () => {
        n++;
        if (n % config.ack === 0 || n === config.total) process.send({ ack: n, done: n === config.total });
      };
      break;
    }
    case 'source': {
      // Send `total` messages, at most 2 windows ahead of the parent's acks.
      let sent = 0;
      let acked = 0;
      const pump = () => {
        while (sent < config.total && sent - acked < 2 * config.ack) process.send(payload(config.kind, sent++));
      };
      onMessage = (m) => {
        acked = m.ack;
        pump();
      };
      pump();
      break;
    }
    case 'echo':
      onMessage = (m) => process.send(m);
      break;
    case 'bigsink':
      onMessage = (m) => process.send({ got: m.s.length });
      break;
    case 'bigsource': {
      const big = { s: 'x'.repeat(config.size) };
      onMessage = () => process.send(big);
      process.send('built');
      break;
    }
    default:
      throw new Error(`unknown mode ${JSON.stringify(config)}`);
  }
};

process.on('message', (m) => onMessage(m));
process.on('disconnect', () => process.exit(0));
process.send('ready');
