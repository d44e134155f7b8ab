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

/// Kills and reaps a child we cannot watch, so a failed spawn leaves no process behind.
pub fn discard(pid: i32) {
  // SAFETY: our own child, by pid; the blocking wait is short since SIGKILL cannot be caught.
  unsafe {
    libc::kill(pid, libc::SIGKILL);
    libc::waitpid(pid, std::ptr::null_mut(), 0);
  }
}
