#!/usr/bin/env node
'use strict';
// `npx rust-cluster [options] app.js [args…]`: see lib/supervisor-cli.js, or run with --help.
require('../lib/supervisor-cli').main();
