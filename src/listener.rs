//! The round-robin accept loop: a listening socket watched by the reactor, whose connections go
//! to the `Acceptor` it was built with, never to JavaScript.
//!
//! It accepts only as many connections as the acceptor has room for. With no room it stops
//! watching the socket, so waiting connections stay in the kernel's backlog instead of a queue of
//! ours, until the acceptor calls `resume`.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;
use nix::sys::socket::{self, SockFlag};

use crate::lock::lock;
use crate::reactor::{Interest, Reactor, Readiness, Registration, Source};

/// Connections accepted per readiness event before other fds get a turn.
const ACCEPTS_PER_WAKE: usize = 256;

/// Where a listener's connections go.
pub trait Acceptor: Send + Sync {
  /// How many more connections listener `id` may accept now.
  fn room(&self, id: u32) -> usize;
  /// Listener `id` is readable: calls `accept(n)` for as many connections as it has room for and
  /// keeps what that returns, or returns false with no room. Room, accept and keeping are one step
  /// under the acceptor's own lock, so a connection is never accepted for a listener the acceptor
  /// let go of meanwhile (its socket handed to someone else): that would close it, a reset for a
  /// client that has sent its request.
  fn take(&self, id: u32, accept: &mut dyn FnMut(usize) -> Vec<OwnedFd>) -> bool;
  /// The reactor can no longer watch listener `id`.
  fn failed(&self, id: u32, reason: String);
}

pub struct Listener {
  pub id: u32,
  io: Registration,
  acceptor: Weak<dyn Acceptor>,
  /// Not watching for connections: the acceptor had no room.
  paused: Mutex<bool>,
}

impl Listener {
  /// Starts accepting on listening socket `fd`.
  pub fn watch(
    reactor: &Arc<Reactor>,
    id: u32,
    fd: Arc<OwnedFd>,
    acceptor: Weak<dyn Acceptor>,
  ) -> Result<Arc<Listener>, Errno> {
    keep_reserve();
    reactor.register(fd, Interest::READ, |io, _| Listener { id, io, acceptor, paused: Mutex::new(false) })
  }

  /// The acceptor has room again.
  pub fn resume(&self) {
    let mut paused = lock(&self.paused);
    if *paused {
      *paused = false;
      self.io.set_read(true);
    }
  }

  fn pause(&self, acceptor: &dyn Acceptor) {
    {
      let mut paused = lock(&self.paused);
      if *paused {
        return;
      }
      *paused = true;
      self.io.set_read(false);
    }
    // Room may have come back before we paused, and its `resume` found nothing to resume. Asked
    // without holding `paused`: the acceptor takes its own lock, and holds it when it resumes us.
    if acceptor.room(self.id) > 0 {
      self.resume();
    }
  }

  /// Up to `room` waiting connections.
  fn accept(&self, room: usize) -> Vec<OwnedFd> {
    let mut accepted = Vec::new();
    while accepted.len() < room {
      match socket::accept4(self.io.fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
        // SAFETY: accept4 returned a new fd that nothing else owns.
        Ok(conn) => accepted.push(unsafe { OwnedFd::from_raw_fd(conn) }),
        Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
        Err(Errno::EMFILE | Errno::ENFILE) => {
          shed_one(self.io.fd());
          break;
        }
        // EAGAIN: drained; anything else is reported again by the next readiness.
        Err(_) => break,
      }
    }
    accepted
  }
}

impl Source for Listener {
  fn ready(&self, _: Readiness) {
    let Some(acceptor) = self.acceptor.upgrade() else {
      return;
    };
    if !acceptor.take(self.id, &mut |room| self.accept(room.min(ACCEPTS_PER_WAKE))) {
      self.pause(acceptor.as_ref());
    }
  }

  fn failed(&self, reason: String) {
    self.io.deregister();
    if let Some(acceptor) = self.acceptor.upgrade() {
      acceptor.failed(self.id, reason);
    }
  }
}

/// An fd kept in reserve for when the table is full (libuv's trick): without it a listener
/// that cannot accept stays readable and the reactor would spin on it. The fd table is the
/// process's, so the reserve is too.
static RESERVE: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn keep_reserve() {
  let mut reserve = lock(&RESERVE);
  if reserve.is_none() {
    *reserve = nix::fcntl::open(
      "/dev/null",
      nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
      nix::sys::stat::Mode::empty(),
    )
    .ok();
  }
}

/// Out of fds: frees the reserve, accepts one connection and closes it at once, so the client
/// sees a reset instead of waiting, then takes the reserve back.
fn shed_one(listener: RawFd) {
  lock(&RESERVE).take();
  if let Ok(conn) = socket::accept4(listener, SockFlag::SOCK_CLOEXEC) {
    // SAFETY: accept4 returned a new fd that nothing else owns; it is closed right away.
    drop(unsafe { OwnedFd::from_raw_fd(conn) });
  }
  keep_reserve();
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::sockets::{bind_tcp, listen, sockname, Tcp};
  use nix::sys::epoll::EpollEvent;
  use std::net::{Ipv4Addr, TcpStream};
  use std::os::fd::AsRawFd;

  /// Takes up to `room` connections, then none until given more.
  struct Limited {
    room: Mutex<usize>,
    got: Mutex<Vec<OwnedFd>>,
  }

  impl Acceptor for Limited {
    fn room(&self, _: u32) -> usize {
      *lock(&self.room)
    }
    fn take(&self, _: u32, accept: &mut dyn FnMut(usize) -> Vec<OwnedFd>) -> bool {
      let mut room = lock(&self.room);
      if *room == 0 {
        return false;
      }
      let connections = accept(*room);
      *room -= connections.len();
      lock(&self.got).extend(connections);
      true
    }
    fn failed(&self, _: u32, _: String) {}
  }

  #[test]
  fn accepts_only_what_the_acceptor_has_room_for_and_leaves_the_rest_in_the_backlog() {
    let reactor = Arc::new(Reactor::new().unwrap());
    let fd =
      bind_tcp(&Tcp { ip: Some(Ipv4Addr::LOCALHOST.into()), port: 0, ipv6_only: false, reuse_port: false }).unwrap();
    listen(&fd, 16).unwrap();
    let port = sockname(fd.as_raw_fd()).unwrap()["port"].as_u64().unwrap() as u16;
    let acceptor = Arc::new(Limited { room: Mutex::new(2), got: Mutex::default() });
    let weak = Arc::downgrade(&acceptor) as Weak<dyn Acceptor>;
    let listener = Listener::watch(&reactor, 1, Arc::new(fd), weak).unwrap();
    let _clients: Vec<_> = (0..5).map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap()).collect();
    let turn = || reactor.turn(&mut [EpollEvent::empty(); 4], Some(100)).unwrap();
    turn();
    turn();
    assert_eq!(lock(&acceptor.got).len(), 2);
    assert!(*lock(&listener.paused), "no room: the socket is not watched");
    assert_eq!(turn(), 0, "no spinning on a listener that may not accept");
    *lock(&acceptor.room) = 10;
    listener.resume();
    turn();
    assert_eq!(lock(&acceptor.got).len(), 5, "the backlog kept the other three");
  }
}
