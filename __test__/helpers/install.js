'use strict';
// rust-cluster installed as a user gets it: `npm pack` of this checkout, and of the platform
// package that carries the core for this machine (npm/<target>/ with the built .node copied in,
// as `napi artifacts` does before publishing), installed offline into a fresh project. Without
// the platform package it is what a platform with no published core gets.
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.join(__dirname, '..', '..');

// This machine's target ('linux-x64-gnu') and the core built for it, named as napi names them.
function builtCore() {
  const file = fs.readdirSync(ROOT).find((f) => /^rust-cluster\..+\.node$/.test(f));
  if (!file) throw new Error('no built core in the checkout: run npm install');
  return { file, target: file.slice('rust-cluster.'.length, -'.node'.length) };
}

// `npm pack` of `dir` into `destination`: the tarball's path and the files it holds.
function pack(dir, destination) {
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', destination], {
    cwd: dir,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const [{ filename, files }] = JSON.parse(out);
  return { tarball: path.join(destination, filename), files: files.map((f) => f.path).sort() };
}

// The platform package for this machine, packed: npm/<target>/ plus the built core.
function packCore(destination) {
  const { file, target } = builtCore();
  const dir = path.join(destination, target);
  fs.cpSync(path.join(ROOT, 'npm', target), dir, { recursive: true });
  fs.copyFileSync(path.join(ROOT, file), path.join(dir, file));
  return { target, ...pack(dir, destination) };
}

// A fresh project with rust-cluster installed, with or without the platform package; removed
// after the test. Returns the project's directory.
function install(t, { core }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-install-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const tarballs = [pack(ROOT, dir).tarball];
  if (core) tarballs.push(packCore(dir).tarball);
  const project = path.join(dir, 'project');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'project', private: true }));
  execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', ...tarballs], { cwd: project, stdio: 'ignore' });
  return project;
}

module.exports = { ROOT, builtCore, pack, packCore, install };
