'use strict';
// Runs the benchmark suite: rust-cluster against Node's built-in cluster / child_process.fork in
// the same run. Every measurement is a fresh Node process (IMPL=rust|node); the implementations
// alternate order from round to round and the table shows medians.
//
//   node bench/run.js [--quick] [--json] [--rounds=N] [channel latency handles fork http large reload]
const fs = require('fs');
const os = require('os');
const { execFileSync } = require('child_process');
const c = require('./common');

const BENCHES = ['channel', 'latency', 'handles', 'fork', 'http', 'large', 'reload'].map((n) => require(`./${n}`));

const argv = process.argv.slice(2);
const opts = {
  quick: argv.includes('--quick'),
  json: argv.includes('--json'),
  rounds: null,
  only: argv.filter((a) => !a.startsWith('--')),
};
const roundsArg = argv.find((a) => a.startsWith('--rounds='));
if (roundsArg) opts.rounds = Number(roundsArg.split('=')[1]);
const unknown = opts.only.filter((n) => !BENCHES.some((b) => b.name === n));
if (unknown.length) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${BENCHES.map((b) => b.name).join(', ')}`);
  process.exit(2);
}
const selected = BENCHES.filter((b) => opts.only.length === 0 || opts.only.includes(b.name));
const defaultRounds = opts.rounds ?? (opts.quick ? 2 : 5);
const log = (...a) => console.error(...a);
const say = opts.json ? () => {} : (...a) => console.log(...a);

// Keep idle CPUs out of deep C-states for comparable latencies: hold /dev/cpu_dma_latency open
// with 0 written (the kernel honours it while the fd stays open, i.e. until we exit).
function holdDmaLatency() {
  try {
    const fd = fs.openSync('/dev/cpu_dma_latency', 'r+');
    fs.writeSync(fd, Buffer.alloc(4));
    return 'held at 0 µs (/dev/cpu_dma_latency open for the whole run)';
  } catch (err) {
    return `not set (${err.code || err.message}): idle CPUs may sleep deeply, latencies are noisier`;
  }
}

function checkTarget(target, ratio, rustValue) {
  if (!target) return null;
  const m = /^(abs)?([≥≤])([\d.]+)$/.exec(target);
  if (!m) return null;
  const v = m[1] ? rustValue : ratio;
  if (v == null) return null;
  return m[2] === '≥' ? v >= Number(m[3]) : v <= Number(m[3]);
}

async function runCase(bench, kase) {
  const rounds = opts.rounds ?? kase.rounds ?? defaultRounds;
  const samples = { rust: [], node: [] };
  const failures = { rust: [], node: [] };
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? ['rust', 'node'] : ['node', 'rust'];
    for (const impl of order) {
      try {
        samples[impl].push(await c.runNode(bench.script, impl, kase.args, { timeoutMs: 60000 }));
      } catch (err) {
        failures[impl].push(err.message);
        log(`  FAIL ${bench.name} "${kase.label}" [${impl}] round ${r + 1}: ${err.message}`);
      }
    }
  }
  const metrics = kase.metrics.map((m) => {
    const rust = c.median(samples.rust.map((s) => s[m.key]));
    const node = c.median(samples.node.map((s) => s[m.key]));
    const ratio = rust != null && node != null && node !== 0 ? rust / node : null;
    return { ...m, rust, node, ratio, meets: checkTarget(m.target, ratio, rust) };
  });
  return { bench: bench.name, case: kase.label, args: kase.args, rounds, metrics, samples, failures };
}

function printTable(results) {
  const rows = [];
  for (const r of results) {
    for (const m of r.metrics) {
      const failed = (impl) => (r.samples[impl].length === 0 && r.failures[impl].length ? 'FAIL' : c.fmt(m[impl]));
      let verdict = '';
      if (m.ratio != null && !m.info) {
        const good = m.better === 'higher' ? m.ratio > 1 : m.ratio < 1;
        verdict = Math.abs(m.ratio - 1) < 0.03 ? 'same' : good ? 'ours better' : 'ours WORSE';
      }
      rows.push([
        `${r.bench}: ${r.case}`,
        m.name,
        failed('rust'),
        failed('node'),
        m.ratio == null ? '-' : m.ratio.toFixed(2) + '×',
        m.info ? 'info' : m.better === 'higher' ? 'higher' : 'lower',
        verdict,
        m.target || '',
        m.meets == null ? '' : m.meets ? 'yes' : 'NO',
      ]);
    }
  }
  say(c.table(rows, ['benchmark', 'metric', 'rust-cluster', 'node', 'ours/node', 'better if', 'verdict', 'target', 'met']));
}

function notes(results) {
  const out = [];
  for (const r of results) {
    if (r.bench === 'http') {
      for (const impl of c.IMPLS) {
        const s = r.samples[impl];
        if (s.length === 0) continue;
        const errs = s.filter((x) => x.errors).map((x) => x.errorDetail);
        out.push(`http ${r.case} [${impl}, policy ${s[0].schedulingPolicy}]: spread per worker % by round: ${s.map((x) => x.spread).join(', ')}${errs.length ? `; wrk errors: ${errs.join(' | ')}` : ''}`);
      }
    }
  }
  const large = results.filter((r) => r.bench === 'large');
  for (const dir of ['parent→child', 'child→parent']) {
    const rs = large.filter((r) => r.case.includes(dir));
    if (rs.length < 2) continue;
    for (const impl of c.IMPLS) {
      const per = rs.map((r) => [r.args.mb, r.metrics.find((m) => m.key === 'msPerMB')[impl]]);
      if (per.some(([, v]) => v == null)) continue;
      const first = per[0][1];
      const last = per[per.length - 1][1];
      out.push(`large ${dir} [${impl}] ms/MB: ${per.map(([mb, v]) => `${mb}MB ${c.fmt(v)}`).join(', ')} (largest/smallest ms/MB = ${(last / first).toFixed(2)}; 1.00 = linear)`);
    }
  }
  for (const r of results) {
    for (const impl of c.IMPLS) {
      for (const f of r.failures[impl]) out.push(`FAILURE ${r.bench} "${r.case}" [${impl}]: ${f}`);
    }
  }
  return out;
}

async function main() {
  const dma = holdDmaLatency();
  const meta = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    loadavgAtStart: os.loadavg().map((x) => +x.toFixed(2)),
    quick: opts.quick,
    rounds: defaultRounds,
    cpuDmaLatency: dma,
  };
  say(`rust-cluster benchmarks (${opts.quick ? 'quick' : 'full'}): node ${meta.node}, ${meta.cpus} CPUs, load ${meta.loadavgAtStart.join(' ')}`);
  say(`cpu_dma_latency: ${dma}`);
  say(`rounds: ${defaultRounds} (cluster HTTP: ${opts.rounds ?? (opts.quick ? 1 : 3)}), implementations alternate order each round, values are medians`);
  say('ratio = rust-cluster / node; "better if" says which direction favours rust-cluster');

  if (selected.some((b) => b.name === 'http')) {
    const http = BENCHES.find((b) => b.name === 'http');
    const gen = http.ensureWrk(log);
    if (!gen) {
      log('neither wrk nor autocannon is available: skipping the cluster HTTP benchmark');
      selected.splice(selected.indexOf(http), 1);
    } else {
      meta.loadGenerator = gen === 'wrk' ? execFileSync('sh', ['-c', 'wrk --version 2>&1 | head -1'], { encoding: 'utf8' }).trim() : 'autocannon (npx)';
      say(`load generator: ${meta.loadGenerator}, 1 thread, 32 connections`);
    }
  }

  const results = [];
  const t0 = Date.now();
  for (const bench of selected) {
    log(`== ${bench.title}`);
    for (const kase of bench.cases(opts)) {
      log(`  ${kase.label}`);
      results.push(await runCase(bench, kase));
    }
  }
  meta.seconds = Math.round((Date.now() - t0) / 1000);
  say('');
  printTable(results);
  const n = notes(results);
  if (n.length) say('\n' + n.join('\n'));
  say(`\n(${meta.seconds} s; load at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}; the machine may be shared, so treat small differences as noise)`);
  const summary = {
    meta,
    results: results.map((r) => ({
      bench: r.bench,
      case: r.case,
      args: r.args,
      rounds: r.rounds,
      metrics: r.metrics.map(({ key, name, better, target, rust, node, ratio, meets }) => ({ key, name, better, target: target ?? null, rust, node, ratio, meets })),
      samples: r.samples,
      failures: r.failures,
    })),
    notes: n,
  };
  if (!opts.json) say('\nJSON summary:');
  console.log(JSON.stringify(summary));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
