'use strict';
// The implementation under test: rust-cluster by default; Node's built-ins with RC_REFERENCE=node,
// which checks that the suite itself encodes Node's behaviour.
const reference = process.env.RC_REFERENCE === 'node';

module.exports = {
  reference,
  get child_process() {
    return reference ? require('child_process') : require('../../child_process');
  },
  get cluster() {
    return reference ? require('cluster') : require('../..');
  },
};
