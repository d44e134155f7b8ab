//! Child processes we spawned: exit status through a pidfd, signals through the same pidfd.
//!
//! libuv owns SIGCHLD inside Node and reaps its own children by pid, so we never install a
//! handler and never `waitpid(-1)`: each child is reaped by its own pid when its pidfd turns
//! readable. Signalling through the pidfd cannot hit a recycled pid.
//!
//! A child outlives the JavaScript environment that spawned it when that environment exits first
//! (a worker_thread ends): it is then an orphan, still watched so that it is reaped when it exits,
//! and nobody is told. The orphans are the process's, so their list is process-wide.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;

use crate::channel::Channel;
use crate::events::{Event, Sink};
use crate::lock::lock;
use crate::reactor::{Interest, Reactor, Readiness, Registration, Source};

pub struct Child {
  pub id: u32,
  pub pid: i32,
  io: Registration,
  sink: Arc<Sink>,
  /// Read to the end before the exit is reported, so the child's last messages come first.
  channel: Option<Weak<Channel>>,
  reaped: AtomicBool,
}

static ORPHANS: Mutex<Vec<Arc<Child>>> = Mutex::new(Vec::new());

/// Opens a pidfd for `pid`.
pub fn pidfd(pid: i32) -> Result<OwnedFd, Errno> {
  // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
  let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
  if raw < 0 {
    return Err(Errno::last());
  }
  // SAFETY: the fd was just created for us; pidfds are CLOEXEC by definition.
  Ok(unsafe { OwnedFd::from_raw_fd(raw as i32) })
}

impl Child {
  pub fn watch(
    reactor: &Arc<Reactor>,
    id: u32,
    pid: i32,
    pidfd: OwnedFd,
    sink: Arc<Sink>,
    channel: Option<&Arc<Channel>>,
  ) -> Result<Arc<Child>, Errno> {
    let channel = channel.map(Arc::downgrade);
    reactor.register(Arc::new(pidfd), Interest::READ, |io, _| Child {
      id,
      pid,
      io,
      sink,
      channel,
      reaped: AtomicBool::new(false),
    })
  }

  /// Sends `signal` (0 probes); `ESRCH` once the child has been reaped.
  pub fn kill(&self, signal: i32) -> Result<(), Errno> {
    if self.reaped.load(Ordering::Acquire) {
      return Err(Errno::ESRCH);
    }
    let pidfd = self.io.fd();
    // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
    let rc =
      unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd, signal, std::ptr::null::<libc::siginfo_t>(), 0) };
    if rc < 0 {
      Err(Errno::last())
    } else {
      Ok(())
    }
  }

  /// Its environment is gone: keep watching it only to reap it.
  pub fn orphan(self: Arc<Child>) {
    if !self.reaped.load(Ordering::Acquire) {
      lock(&ORPHANS).push(self);
    }
  }

  fn reap(&self) -> Option<(Option<i32>, Option<i32>)> {
    let mut status = 0;
    // SAFETY: waiting for our own child by pid, without blocking.
    let reaped = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
    if reaped == 0 || self.reaped.swap(true, Ordering::AcqRel) {
      return None;
    }
    Some(if reaped < 0 {
      (Some(-(Errno::last() as i32)), None)
    } else if libc::WIFSIGNALED(status) {
      (None, Some(libc::WTERMSIG(status)))
    } else {
      (Some(libc::WEXITSTATUS(status)), None)
    })
  }
}

impl Source for Child {
  fn ready(&self, _: Readiness) {
    let Some((code, signal)) = self.reap() else { return };
    self.io.deregister();
    lock(&ORPHANS).retain(|orphan| orphan.pid != self.pid);
    if let Some(channel) = self.channel.as_ref().and_then(Weak::upgrade) {
      channel.read_remaining();
    }
    self.sink.push(Event::Exit { id: self.id, code, signal });
  }

  fn failed(&self, reason: String) {
    self.sink.push(Event::Error { id: self.id, message: reason });
  }
}

/// What the kernel counts for a child: resident memory and CPU time so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
  pub rss_bytes: u64,
  pub cpu_seconds: f64,
}

impl Child {
  /// Read from `/proc/<pid>/stat`, so the child does nothing for it; `None` once it has gone.
  pub fn usage(&self) -> Option<Usage> {
    if self.reaped.load(Ordering::Acquire) {
      return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
    // SAFETY: sysconf has no preconditions.
    let (page, ticks) = unsafe { (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_CLK_TCK)) };
    parse_stat(&stat, page.max(1) as u64, ticks.max(1) as f64)
  }
}

/// `/proc/<pid>/stat`: after `pid (comm) ` come fields 3 on; utime and stime are 14 and 15 (clock
/// ticks), rss is 24 (pages). The command name may hold spaces and parentheses, hence the last ')'.
fn parse_stat(stat: &str, page: u64, ticks: f64) -> Option<Usage> {
  let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
  let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
  Some(Usage { rss_bytes: field(24)? * page, cpu_seconds: (field(14)? + field(15)?) as f64 / ticks })
}

/// Kills and reaps a child we cannot watch, so a failed spawn leaves no process behind.
pub fn discard(pid: i32) {
  // SAFETY: our own child, by pid; the blocking wait is short since SIGKILL cannot be caught.
  unsafe {
    libc::kill(pid, libc::SIGKILL);
    libc::waitpid(pid, std::ptr::null_mut(), 0);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn usage_from_a_stat_line_whose_command_has_spaces_and_parentheses() {
    let stat = "4242 (node (worker) 1) S 1 4242 4242 0 -1 4194560 2931 0 0 0 150 50 0 0 20 0 11 0 \
      12345 1059651584 9216 18446744073709551615 0 0 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
    let usage = parse_stat(stat, 4096, 100.0).unwrap();
    assert_eq!(usage, Usage { rss_bytes: 9216 * 4096, cpu_seconds: 2.0 });
    assert_eq!(parse_stat("garbage", 4096, 100.0), None);
  }
}
