'use strict';
// Where Node's lines differ in a behaviour rust-cluster reproduces, what the running line does.
// Each is told by Node's own source where it can be read (process.binding('natives'), silent on
// every supported line), by the line's version otherwise.
const [major, minor] = process.versions.node.split('.').map(Number);

function nodeSource(id) {
  try {
    const source = process.binding('natives')[id];
    return typeof source === 'string' ? source : undefined;
  } catch {
    // process.binding may be refused (permission model): the version decides.
    return undefined;
  }
}

function atLeast(...versions) {
  return versions.some(([M, m]) => major > M || (major === M && minor >= m));
}

function told(id, text, byVersion) {
  const source = nodeSource(id);
  return source === undefined ? byVersion() : source.includes(text);
}

module.exports = {
  // nodejs/node#60141 (22.23, 24.22, 26): a worker's server with a fixed port is keyed without
  // its listen index, so workers listening on one port from separate listen() calls share it.
  keysFixedPortsWithoutIndex: told('internal/cluster/primary', 'message.port === 0 ?', () =>
    atLeast([26, 0]) || (major === 24 && minor >= 22) || (major === 22 && minor >= 23)),
  // Node 25+ checks fork's `timeout` as an integer: a non-number is ERR_INVALID_ARG_TYPE.
  timeoutIsInteger: major >= 25,
  // The 'child_process.spawn' tracing channel (start, end, error), beside 'child_process'.
  tracesSpawn: told('internal/child_process', "tracingChannel('child_process.spawn')", () => major >= 24),
};
