//! The one background thread that waits on every fd the Rust side owns: channel sockets,
//! child pidfds and round-robin listening sockets.
//!
//! Registration and `epoll_ctl` changes are made from whichever thread needs them (epoll is
//! thread-safe); the thread itself only dispatches readiness to the owner of each token and wakes
//! JavaScript once per batch. It is spawned lazily and lives as long as the process.

use std::os::fd::BorrowedFd;
use std::panic;
use std::thread;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use once_cell::sync::Lazy;

use crate::{channel, events, listener, process};

/// Whose fd an epoll token names; the kind rides in the token's high half, the id in the low.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
  Channel = 1,
  Process = 2,
  Listener = 3,
}

const KIND_SHIFT: u32 = 32;

fn token(kind: Kind, id: u32) -> u64 {
  ((kind as u64) << KIND_SHIFT) | u64::from(id)
}

fn kind_of(token: u64) -> Option<Kind> {
  [Kind::Channel, Kind::Process, Kind::Listener].into_iter().find(|&k| k as u64 == token >> KIND_SHIFT)
}

static EPOLL: Lazy<Epoll> = Lazy::new(|| {
  let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll_create1 failed");
  thread::Builder::new()
    .name("rust-cluster-reactor".into())
    .spawn(run)
    .expect("cannot start the rust-cluster reactor thread");
  epoll
});

pub fn register(fd: BorrowedFd<'_>, kind: Kind, id: u32) -> Result<(), Errno> {
  EPOLL.add(fd, EpollEvent::new(interest(true, false), token(kind, id)))
}

/// For an fd only written to: nothing but hang-ups (always reported) until EPOLLOUT is wanted.
pub fn register_output(fd: BorrowedFd<'_>, kind: Kind, id: u32) -> Result<(), Errno> {
  EPOLL.add(fd, EpollEvent::new(interest(false, false), token(kind, id)))
}

pub fn set_interest(fd: BorrowedFd<'_>, kind: Kind, id: u32, readable: bool, writable: bool) -> Result<(), Errno> {
  EPOLL.modify(fd, &mut EpollEvent::new(interest(readable, writable), token(kind, id)))
}

pub fn deregister(fd: BorrowedFd<'_>) {
  // ENOENT/EBADF: already gone, which is the state we want.
  let _ = EPOLL.delete(fd);
}

fn interest(readable: bool, writable: bool) -> EpollFlags {
  let mut flags = EpollFlags::empty();
  if readable {
    flags |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
  }
  if writable {
    flags |= EpollFlags::EPOLLOUT;
  }
  flags
}

fn run() {
  let epoll = &*EPOLL;
  let mut ready = vec![EpollEvent::empty(); 256];
  loop {
    let n = match epoll.wait(&mut ready, EpollTimeout::NONE) {
      Ok(n) => n,
      Err(Errno::EINTR) => continue,
      Err(e) => panic!("epoll_wait failed: {e}"),
    };
    for event in &ready[..n] {
      let id = event.data() as u32;
      let flags = event.events();
      let kind = kind_of(event.data());
      contain(kind, id, || match kind {
        Some(Kind::Channel) => channel::on_ready(id, flags),
        Some(Kind::Process) => process::on_exit(id),
        Some(Kind::Listener) => listener::on_ready(id),
        None => {}
      });
    }
    events::wake();
  }
}

/// Runs the handler of one ready fd. A bug met there must not stop the thread every channel
/// depends on: a panic becomes an error on that channel, which is then closed.
fn contain(kind: Option<Kind>, id: u32, handler: impl FnOnce() + panic::UnwindSafe) {
  if let (Err(cause), Some(Kind::Channel)) = (panic::catch_unwind(handler), kind) {
    let what = cause.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| cause.downcast_ref::<String>().cloned());
    channel::fail(id, format!("internal error in rust-cluster: {}", what.unwrap_or_default()));
  }
}

/// Makes sure the reactor is running before the first registration needs it.
pub fn start() {
  Lazy::force(&EPOLL);
}

pub fn readable(flags: EpollFlags) -> bool {
  flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLERR)
}

pub fn hung_up(flags: EpollFlags) -> bool {
  flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
}

pub fn writable(flags: EpollFlags) -> bool {
  flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::events::Event;
  use crate::framing::Mode;
  use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

  #[test]
  fn a_panic_in_a_channel_handler_is_an_error_on_that_channel_which_then_closes() {
    let (ours, _peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let id = 900_001;
    channel::open(id, ours, Mode::Json, 1 << 20, None).unwrap();
    contain(Some(Kind::Channel), id, || panic!("boom"));
    let reported = events::take();
    assert!(
      reported.iter().any(|e| matches!(e, Event::Error { id: 900_001, message } if message.ends_with("boom"))),
      "an error names the panic"
    );
    assert!(reported.iter().any(|e| matches!(e, Event::Disconnect { id: 900_001 })), "then the channel closes");
    assert!(channel::get(id).is_none());
  }
}
