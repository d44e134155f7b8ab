'use strict';
// `rust-cluster status`: a supervisor's stats() as a table for people, in human units.

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

// 1536 -> '1.5 KB' (units of 1024, as the command's other messages count MB).
function formatBytes(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

// 192 -> '3m 12s': the two largest units.
function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const parts = [[Math.floor(s / 86400), 'd'], [Math.floor(s / 3600) % 24, 'h'], [Math.floor(s / 60) % 60, 'm'], [s % 60, 's']];
  let first = parts.findIndex(([n]) => n > 0);
  if (first === -1) first = parts.length - 1;
  return parts.slice(first, first + 2).map(([n, unit]) => `${n}${unit}`).join(' ');
}

// CPU time: to the hundredth of a second under a minute.
const formatCpuTime = (seconds) => (seconds < 60 ? `${seconds.toFixed(2)}s` : formatDuration(seconds));

const formatPercent = (percent) => `${percent.toFixed(1)}%`;

// A figure, or '-' where it was not sampled.
const figure = (format) => (value) => (value === null || value === undefined ? '-' : format(value));
const plain = figure(String);

// Columns of `rows` (arrays of strings, the first the header) padded to a common width, two
// spaces apart; `right[i]` right-aligns column i (numbers).
function columns(rows, right) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return rows
    .map((row) => row.map((cell, i) => (right[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))).join('  ').trimEnd())
    .join('\n');
}

const WORKER_COLUMNS = [
  ['SLOT', true, (w) => plain(w.slot)],
  ['ID', true, (w) => plain(w.id)],
  ['PID', true, (w) => plain(w.pid)],
  ['STATE', false, (w) => w.state],
  ['UPTIME', true, (w) => figure(formatDuration)(w.uptime)],
  ['RESTARTS', true, (w) => plain(w.restarts)],
  ['CPU', true, (w) => figure(formatPercent)(w.cpuPercent)],
  ['CPU TIME', true, (w) => figure(formatCpuTime)(w.cpuSeconds)],
  ['MEMORY', true, (w) => figure(formatBytes)(w.rss)],
  ['MSGS IN', true, (w) => plain(w.messagesIn)],
  ['MSGS OUT', true, (w) => plain(w.messagesOut)],
  ['BYTES IN', true, (w) => figure(formatBytes)(w.bytesIn)],
  ['BYTES OUT', true, (w) => figure(formatBytes)(w.bytesOut)],
  ['CONNS', true, (w) => plain(w.handed)],
  ['PENDING', true, (w) => plain(w.pending)],
];

const SERVER_COLUMNS = [
  ['SERVER', false, (s) => s.key],
  ['ACCEPTED', true, (s) => plain(s.accepted)],
  ['QUEUED', true, (s) => plain(s.queued)],
];

function table(spec, items) {
  return columns([spec.map(([title]) => title), ...items.map((item) => spec.map(([, , cell]) => cell(item)))], spec.map(([, right]) => right));
}

function headline(stats) {
  const ready = stats.workers.filter((w) => w.state === 'ready').length;
  const slots = new Set([...stats.workers, ...stats.vacant].map((w) => w.slot)).size;
  const reloads = `${stats.generation} reload${stats.generation === 1 ? '' : 's'}`;
  const parts = [stats.state, `${ready}/${slots} workers ready`, reloads];
  if (stats.crashLoop) parts.push('crash loop: workers are no longer restarted');
  return `rust-cluster: ${parts.join(', ')}`;
}

// stats() -> the text `rust-cluster status` prints.
function statusTable(stats) {
  const rows = [...stats.workers, ...stats.vacant].sort((a, b) => a.slot - b.slot);
  const out = [headline(stats), '', table(WORKER_COLUMNS, rows)];
  if (stats.servers?.length) out.push('', table(SERVER_COLUMNS, stats.servers));
  out.push('', 'IN: from the worker to the primary. CONNS: connections handed to the worker; PENDING: not yet accepted by it.');
  if (stats.implementation !== 'rust') out.push("No native core (Node's own cluster): message, byte and connection figures are not available.");
  return `${out.join('\n')}\n`;
}

module.exports = { statusTable, formatBytes, formatDuration };
