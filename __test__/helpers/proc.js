'use strict';
// What /proc says about processes and fds, for tests that check nothing is left behind.
const fs = require('fs');

// True once `pid` has exited (a zombie still answers kill 0, so its state is read too).
function isGone(pid) {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (err.code === 'ESRCH') return true;
    throw err;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  } catch {
    return true;
  }
}

// This process's open fds and what each points at.
function openFds() {
  const out = [];
  for (const name of fs.readdirSync('/proc/self/fd')) {
    try {
      out.push({ fd: Number(name), target: fs.readlinkSync(`/proc/self/fd/${name}`) });
    } catch {
      // the directory fd readdirSync itself used, already closed
    }
  }
  return out;
}

module.exports = { isGone, openFds };
