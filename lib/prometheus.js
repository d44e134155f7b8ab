'use strict';
// Prometheus's text exposition format, version 0.0.4: each metric family is a `# HELP` line, a
// `# TYPE` line and its samples, `name{label="value",...} value`, one per line.
const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

// HELP text escapes backslash and newline; label values double quotes too.
const escapeHelp = (text) => text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (value) => escapeHelp(String(value)).replace(/"/g, '\\"');

function formatValue(value) {
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value); // NaN and exponents are written as Prometheus reads them
}

function formatLabels(labels) {
  const pairs = Object.entries(labels).map(([name, value]) => `${name}="${escapeLabel(value)}"`);
  return pairs.length > 0 ? `{${pairs.join(',')}}` : '';
}

// `families`: [{ name, type ('counter' | 'gauge'), help, samples: [{ labels, value }] }] -> text.
// A family without samples is left out.
function exposition(families) {
  let text = '';
  for (const { name, type, help, samples } of families) {
    if (samples.length === 0) continue;
    text += `# HELP ${name} ${escapeHelp(help)}\n# TYPE ${name} ${type}\n`;
    for (const { labels = {}, value } of samples) text += `${name}${formatLabels(labels)} ${formatValue(value)}\n`;
  }
  return text;
}

module.exports = { exposition, CONTENT_TYPE };
