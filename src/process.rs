//! Child processes we spawned: exit status through a pidfd, signals through the same pidfd.
//!
//! libuv owns SIGCHLD inside Node and reaps its own children by pid, so we never install a
//! handler and never `waitpid(-1)`: each child is reaped by its own pid when its pidfd turns
//! readable. Signalling through the pidfd cannot hit a recycled pid.

use crate::lock::lock;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use once_cell::sync::Lazy;

use crate::channel;
use crate::events::{self, Event};
use crate::reactor::{self, Kind};

struct Child {
  pid: i32,
  pidfd: OwnedFd,
}

static CHILDREN: Lazy<Mutex<HashMap<u32, Arc<Child>>>> = Lazy::new(Default::default);

pub fn watch(id: u32, pid: i32) -> Result<(), Errno> {
  // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
  let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
  if raw < 0 {
    return Err(Errno::last());
  }
  // SAFETY: the fd was just created for us; pidfds are CLOEXEC by definition.
  let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
  let child = Arc::new(Child { pid, pidfd });
  lock(&CHILDREN).insert(id, child.clone());
  reactor::register(child.pidfd.as_fd(), Kind::Process, id).inspect_err(|_| {
    lock(&CHILDREN).remove(&id);
  })
}

pub fn on_exit(id: u32) {
  let Some(child) = lock(&CHILDREN).get(&id).cloned() else { return };
  let mut status = 0;
  // SAFETY: waiting for our own child by pid, without blocking.
  let reaped = unsafe { libc::waitpid(child.pid, &mut status, libc::WNOHANG) };
  if reaped == 0 {
    return;
  }
  lock(&CHILDREN).remove(&id);
  reactor::deregister(child.pidfd.as_fd());
  // Everything the child wrote before it died is in the socket: deliver it before the exit.
  channel::read_pending(id);
  let (code, signal) = if reaped < 0 {
    (Some(-(Errno::last() as i32)), None)
  } else if libc::WIFSIGNALED(status) {
    (None, Some(libc::WTERMSIG(status)))
  } else {
    (Some(libc::WEXITSTATUS(status)), None)
  };
  events::push(Event::Exit { id, code, signal });
}

/// Sends `signal` (0 probes); `ESRCH` once the child has been reaped.
pub fn kill(id: u32, signal: i32) -> Result<(), Errno> {
  let child = lock(&CHILDREN).get(&id).cloned().ok_or(Errno::ESRCH)?;
  // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
  let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, child.pidfd.as_raw_fd(), signal, std::ptr::null::<libc::siginfo_t>(), 0) };
  if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}
