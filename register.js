'use strict';
// `node -r rust-cluster/register app.js`, or NODE_OPTIONS="--require rust-cluster/register":
// `cluster` and `child_process` are rust-cluster's in this process and in every child it forks
// (imports too on Node >= 22.15; on Node 20, use --import for that). See lib/register.js.
require('./lib/register').install('require');
