'use strict';
// A child forked by a process that runs the preload gets it too. Node passes execArgv and
// NODE_OPTIONS on by default, so a child usually has it already; when the fork's own execArgv and
// env leave it out, it is put first in the child's execArgv, the way this process loaded it.
const path = require('path');
const { fileURLToPath, pathToFileURL } = require('url');
const register = require('./register');

const REGISTER_JS = path.join(register.ROOT, 'register.js');
const REGISTER_MJS = path.join(register.ROOT, 'register.mjs');
const FILES = new Set([REGISTER_JS, REGISTER_MJS, path.join(register.ROOT, 'register')]);
const PRELOAD_FLAGS = new Set(['-r', '--require', '--import']);

// NODE_OPTIONS as Node splits it: on spaces, except inside double quotes (where \ escapes).
function splitOptions(value) {
  return (String(value ?? '').match(/(?:[^\s"]+|"(?:\\.|[^"\\])*")+/g) ?? []).map((token) =>
    token.replace(/"((?:\\.|[^"\\])*)"/g, (_, quoted) => quoted.replace(/\\(.)/g, '$1')));
}

// Whether a preload flag's value names rust-cluster/register: by that specifier, a path (relative
// to the child's cwd, as Node resolves it) or a file: URL.
function namesRegister(value, cwd) {
  if (value === 'rust-cluster/register') return true;
  try {
    return FILES.has(value.startsWith('file:') ? fileURLToPath(value) : path.resolve(cwd, value));
  } catch {
    return false;
  }
}

function preloads(args, cwd) {
  for (let i = 0; i < args.length; i++) {
    const arg = String(args[i]);
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    if (!PRELOAD_FLAGS.has(flag)) continue;
    const value = eq < 0 ? args[++i] : arg.slice(eq + 1);
    if (value !== undefined && namesRegister(String(value), cwd)) return true;
  }
  return false;
}

// The execArgv for a child that runs in `cwd` with `env`.
function execArgvFor(execArgv, env, cwd) {
  const entry = register.installed();
  if (entry === undefined || preloads(execArgv, cwd) || preloads(splitOptions(env.NODE_OPTIONS), cwd)) return execArgv;
  return entry === 'import' ? ['--import', pathToFileURL(REGISTER_MJS).href, ...execArgv] : ['--require', REGISTER_JS, ...execArgv];
}

module.exports = { execArgvFor };
