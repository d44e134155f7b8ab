'use strict';
// The preload (`rust-cluster/register`): `cluster` and `child_process`, bare or with `node:`,
// resolve to rust-cluster's entry points for every module except rust-cluster's own, which keep
// Node's built-ins. Installing it loads nothing else: the entry points come with the first
// require or import of those modules, and the core with the first fork where that can wait.
// One file, since a preload is paid for by every process that has it.
//
// require(): Module._load, which every require() of a built-in goes through on every supported
// Node line (it is also what APM agents wrap). module.registerHooks sees require() as well, but
// Node 20 lacks it and older 22/24 releases skip it for `require('node:…')` (nodejs/node#61088).
//
// import: a resolve hook. module.registerHooks (Node >= 22.15, 23.5) runs in this thread and
// costs nothing at startup. Node 20 only has module.register, whose hooks run on a loader thread
// that takes ~45 ms to start (and Node 26 deprecates it: DEP0205), so it is used only when the
// process asked for ESM with `--import rust-cluster/register`.
const Module = require('module');
const path = require('path');
const { fileURLToPath, pathToFileURL } = require('url');

const ROOT = path.join(__dirname, '..');
const LIB = path.join(ROOT, 'lib') + path.sep;
const ENTRIES = { cluster: 'index', child_process: 'child_process' };

// Per thread (each has its own module loaders), shared by every copy of rust-cluster loaded in
// it: the entry that installed the preload, 'require' or 'import'.
const STATE = Symbol.for('rust-cluster.register');

// rust-cluster's own files: the entry points and loader at the package root, and lib/.
function isOurs(file) {
  return typeof file === 'string' && ((path.dirname(file) === ROOT && /\.m?js$/.test(file)) || file.startsWith(LIB));
}

// The file that replaces `specifier` for a module at `parent` (a path, if it has one): the
// entry point with `extension` ('.js' for require, '.mjs' for import), or undefined.
function replacement(specifier, parent, extension) {
  const name = specifier.startsWith('node:') ? specifier.slice(5) : specifier;
  if (!Object.hasOwn(ENTRIES, name) || isOurs(parent)) return undefined;
  return path.join(ROOT, ENTRIES[name] + extension);
}

function hookRequire() {
  const load = Module._load;
  Module._load = function _load(request, parent, isMain) {
    const file = typeof request === 'string' && replacement(request, parent?.filename, '.js');
    return load.call(this, file || request, parent, isMain);
  };
}

// The resolve hook for import; require() is left to Module._load, though registerHooks shows it here too.
function resolve(specifier, context, nextResolve) {
  const parent = context.parentURL?.startsWith('file:') ? fileURLToPath(context.parentURL) : undefined;
  const file = !context.conditions?.includes('require') && replacement(specifier, parent, '.mjs');
  return file ? { url: pathToFileURL(file).href, shortCircuit: true } : nextResolve(specifier, context);
}

const inThread = typeof Module.registerHooks === 'function';

function hookImport(entry) {
  if (inThread) Module.registerHooks({ resolve });
  else if (entry === 'import') Module.register(pathToFileURL(path.join(__dirname, 'register-hooks.mjs')));
}

// `entry`: 'require' (register.js: -r, NODE_OPTIONS) or 'import' (register.mjs: --import), which
// on Node 20 also hooks import. Loaded through both, the preload is installed once.
function install(entry) {
  const state = process[STATE];
  if (state === 'import' || state === entry) return;
  if (state === undefined) hookRequire();
  if (state === undefined || !inThread) hookImport(entry);
  process[STATE] = entry;
}

// How this thread's preload was installed, or undefined.
function installed() {
  return process[STATE];
}

module.exports = { ROOT, install, installed, resolve };
