'use strict';
// The client half of the `rust-cluster` command: `rust-cluster status|reload|scale|stop <socket>`
// asks a running cluster through its control socket (--control) and says what it answered, as
// text for people or, with --json, as JSON for scripts. Resolves with the exit status: 0, or 1
// when the cluster could not be reached or refused.
const { request } = require('./control-client');
const { statusTable } = require('./status-table');

const SAY = {
  status: statusTable,
  reload: ({ replaced }) => `reloaded: ${replaced} workers replaced\n`,
  scale: ({ workers }) => `scaled to ${workers} workers\n`,
  stop: ({ killed }) => (killed ? `stopped; ${killed} workers were killed at the drain timeout\n` : 'stopped; every worker drained\n'),
};

// `control`: { command, path, json[, workers] }, as lib/supervisor-cli.js parses it.
async function runControl({ command, path, json, workers }, { stdout, stderr }) {
  try {
    const result = await request(path, command === 'scale' ? { cmd: command, workers } : { cmd: command });
    stdout.write(json ? `${JSON.stringify(result, null, 2)}\n` : SAY[command](result));
    return 0;
  } catch (err) {
    if (json) stdout.write(`${JSON.stringify({ error: { code: err.code, message: err.message } })}\n`);
    stderr.write(`rust-cluster: ${err.message}\n`);
    return 1;
  }
}

module.exports = { runControl, COMMANDS: Object.keys(SAY) };
