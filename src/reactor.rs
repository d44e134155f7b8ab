//! The event loop: one epoll set, a slab of sources, readiness handed to each source.
//!
//! The reactor imports none of its users. Whoever owns an fd registers it with a `Source` (a trait
//! object) and gets back a `Registration`; the epoll token is the source's slab slot and that
//! slot's generation, so readiness that races a deregistration never reaches the slot's next
//! owner. The slab holds sources weakly: the owner keeps the source alive, and dropping it
//! deregisters the fd before the fd closes.
//!
//! Epoll is level-triggered, so a source that stops reading (flow control) only drops its read
//! interest; readiness comes back by itself when the interest does.
//!
//! `global()` is the process-wide reactor, turned by one thread that lives as long as the
//! process and serves every JavaScript environment; tests build their own and turn it by hand.
//! A panic in a source, or a failed `epoll_wait`, is reported to the sources concerned through
//! `Source::failed`, never a silent freeze.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Weak};
use std::thread;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use once_cell::sync::OnceCell;

use crate::lock::lock;

/// What epoll reported for one fd.
#[derive(Clone, Copy, Debug)]
pub struct Readiness(EpollFlags);

impl Readiness {
  /// Data or an end of stream to read.
  pub fn readable(self) -> bool {
    self.0.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLERR)
  }

  pub fn writable(self) -> bool {
    self.0.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
  }

  pub fn hung_up(self) -> bool {
    self.0.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
  }
}

/// Something that owns a registered fd and acts on its readiness.
pub trait Source: Send + Sync {
  fn ready(&self, readiness: Readiness);
  /// The reactor cannot serve this source any more: a panic in `ready`, or the loop stopped.
  fn failed(&self, reason: String);
}

/// Told after every batch of readiness, e.g. to wake a JavaScript thread once per batch.
pub trait BatchEnd: Send + Sync {
  fn batch_end(&self);
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
  pub read: bool,
  pub write: bool,
}

impl Interest {
  pub const READ: Interest = Interest { read: true, write: false };
  /// Only hang-ups, which epoll always reports (a write-only fd with nothing to write).
  pub const NONE: Interest = Interest { read: false, write: false };

  fn flags(self) -> EpollFlags {
    let mut flags = EpollFlags::empty();
    if self.read {
      flags |= EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    }
    if self.write {
      flags |= EpollFlags::EPOLLOUT;
    }
    flags
  }
}

struct Slot {
  generation: u32,
  source: Option<Weak<dyn Source>>,
}

/// Sources by token: the low half of a token is the slot, the high half its generation.
#[derive(Default)]
struct Slab {
  slots: Vec<Slot>,
  free: Vec<u32>,
}

impl Slab {
  fn reserve(&mut self) -> u64 {
    let index = self.free.pop().unwrap_or_else(|| {
      self.slots.push(Slot { generation: 0, source: None });
      (self.slots.len() - 1) as u32
    });
    let slot = &mut self.slots[index as usize];
    (u64::from(slot.generation) << 32) | u64::from(index)
  }

  fn slot(&mut self, token: u64) -> Option<&mut Slot> {
    let slot = self.slots.get_mut(token as u32 as usize)?;
    (u64::from(slot.generation) == token >> 32).then_some(slot)
  }

  fn get(&mut self, token: u64) -> Option<Arc<dyn Source>> {
    self.slot(token)?.source.as_ref()?.upgrade()
  }

  fn release(&mut self, token: u64) {
    if let Some(slot) = self.slot(token) {
      slot.source = None;
      slot.generation = slot.generation.wrapping_add(1);
      self.free.push(token as u32);
    }
  }

  /// The one registered source, if there is exactly one.
  fn sole(&self) -> Option<Arc<dyn Source>> {
    if self.slots.len() - self.free.len() != 1 {
      return None;
    }
    self.slots.iter().find_map(|slot| slot.source.as_ref()?.upgrade())
  }

  fn live(&self) -> Vec<Arc<dyn Source>> {
    self.slots.iter().filter_map(|slot| slot.source.as_ref()?.upgrade()).collect()
  }
}

pub struct Reactor {
  epoll: Epoll,
  slab: Mutex<Slab>,
  batch_hooks: Mutex<Vec<Weak<dyn BatchEnd>>>,
}

/// One registered fd. Owned by its source; dropping it takes the fd out of the epoll set.
pub struct Registration {
  reactor: Arc<Reactor>,
  token: u64,
  fd: Arc<OwnedFd>,
  /// The interest epoll has, changed under this lock so concurrent changes cannot cross.
  interest: Mutex<Option<Interest>>,
}

impl Registration {
  pub fn fd(&self) -> RawFd {
    self.fd.as_raw_fd()
  }

  /// Whether epoll reports this fd's reads (false once deregistered).
  #[cfg(test)]
  pub fn reading(&self) -> bool {
    lock(&self.interest).is_some_and(|interest| interest.read)
  }

  pub fn set_read(&self, on: bool) {
    self.change(|interest| interest.read = on);
  }

  pub fn set_write(&self, on: bool) {
    self.change(|interest| interest.write = on);
  }

  fn change(&self, edit: impl FnOnce(&mut Interest)) {
    let mut current = lock(&self.interest);
    let Some(interest) = current.as_mut() else { return };
    let before = *interest;
    edit(interest);
    if *interest != before {
      let mut event = EpollEvent::new(interest.flags(), self.token);
      // Fails only once the fd is gone, and then there is nothing left to wait for.
      let _ = self.reactor.epoll.modify(self.fd.as_fd(), &mut event);
    }
  }

  /// Out of the epoll set and the slab; later readiness is dropped. Idempotent.
  pub fn deregister(&self) {
    if lock(&self.interest).take().is_some() {
      // ENOENT/EBADF: already gone, which is the state we want.
      let _ = self.reactor.epoll.delete(self.fd.as_fd());
      lock(&self.reactor.slab).release(self.token);
    }
  }
}

impl Drop for Registration {
  fn drop(&mut self) {
    self.deregister();
  }
}

static GLOBAL: OnceCell<Arc<Reactor>> = OnceCell::new();

/// The process-wide reactor, started on first use.
pub fn global() -> Result<&'static Arc<Reactor>, String> {
  GLOBAL.get_or_try_init(|| {
    let reactor = Arc::new(Reactor::new().map_err(|e| format!("epoll_create1: {}", e.desc()))?);
    let turning = reactor.clone();
    thread::Builder::new()
      .name("rust-cluster-reactor".into())
      .spawn(move || turning.run())
      .map_err(|e| format!("cannot start the rust-cluster reactor thread: {e}"))?;
    Ok(reactor)
  })
}

impl Reactor {
  pub fn new() -> Result<Reactor, Errno> {
    Ok(Reactor {
      epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
      slab: Mutex::default(),
      batch_hooks: Mutex::default(),
    })
  }

  /// Registers `fd` for the source that `build` makes around its registration (`build` also gets
  /// the source's own weak pointer, for sources that hand out references to themselves).
  pub fn register<S: Source + 'static>(
    self: &Arc<Self>,
    fd: Arc<OwnedFd>,
    interest: Interest,
    build: impl FnOnce(Registration, &Weak<S>) -> S,
  ) -> Result<Arc<S>, Errno> {
    let token = lock(&self.slab).reserve();
    let registration =
      Registration { reactor: self.clone(), token, fd: fd.clone(), interest: Mutex::new(Some(interest)) };
    let source = Arc::new_cyclic(|this| build(registration, this));
    let weak: Weak<dyn Source> = Arc::downgrade(&source) as Weak<dyn Source>;
    if let Some(slot) = lock(&self.slab).slot(token) {
      slot.source = Some(weak);
    }
    // On failure the source drops here, and its registration gives the slot back.
    self.epoll.add(fd.as_fd(), EpollEvent::new(interest.flags(), token))?;
    Ok(source)
  }

  /// The epoll set itself, for a reactor served from elsewhere (an environment's channel set).
  pub fn fd(&self) -> BorrowedFd<'_> {
    self.epoll.0.as_fd()
  }

  pub fn add_batch_hook(&self, hook: Weak<dyn BatchEnd>) {
    let mut hooks = lock(&self.batch_hooks);
    hooks.retain(|hook| hook.strong_count() > 0);
    hooks.push(hook);
  }

  /// Waits once (`timeout` in ms, or forever), dispatches what is ready, then runs the batch
  /// hooks; returns how many fds were ready.
  pub fn turn(&self, ready: &mut [EpollEvent], timeout: Option<u16>) -> Result<usize, Errno> {
    let timeout = timeout.map_or(EpollTimeout::NONE, EpollTimeout::from);
    let n = self.epoll.wait(ready, timeout)?;
    for event in &ready[..n] {
      let source = lock(&self.slab).get(event.data());
      if let Some(source) = source {
        contain(source.as_ref(), Readiness(event.events()));
      }
    }
    self.end_batch();
    Ok(n)
  }

  /// Serves the set when its own fd polled readable elsewhere (a JavaScript loop): with a single
  /// source, that source is the one ready, and the wait is saved.
  pub fn serve_ready(&self, ready: &mut [EpollEvent]) {
    let sole = lock(&self.slab).sole();
    match sole {
      Some(source) => {
        contain(source.as_ref(), Readiness(EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT));
        self.end_batch();
      }
      None => drop(self.turn(ready, Some(0))),
    }
  }

  fn run(&self) {
    let mut ready = vec![EpollEvent::empty(); 256];
    loop {
      match self.turn(&mut ready, None) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(errno) => return self.stop(format!("rust-cluster's reactor stopped: epoll_wait: {}", errno.desc())),
      }
    }
  }

  /// Tells every source that nothing will be served any more.
  pub fn stop(&self, reason: String) {
    let sources = lock(&self.slab).live();
    for source in sources {
      let failed = panic::catch_unwind(AssertUnwindSafe(|| source.failed(reason.clone())));
      drop(failed);
    }
    self.end_batch();
  }

  /// Runs the batch hooks, under their lock: no allocation per batch, and a hook (a sink's wake)
  /// never registers another.
  fn end_batch(&self) {
    for hook in lock(&self.batch_hooks).iter().filter_map(Weak::upgrade) {
      hook.batch_end();
    }
  }
}

/// Runs one source's handler. A bug met there must not stop the thread every source depends on:
/// the panic is reported to that source, which gives up its fd.
fn contain(source: &dyn Source, readiness: Readiness) {
  if let Err(cause) = panic::catch_unwind(AssertUnwindSafe(|| source.ready(readiness))) {
    let what = cause.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| cause.downcast_ref::<String>().cloned());
    let reason = format!("internal error in rust-cluster: {}", what.unwrap_or_default());
    let reported = panic::catch_unwind(AssertUnwindSafe(|| source.failed(reason)));
    drop(reported);
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
  use std::sync::atomic::{AtomicUsize, Ordering};

  #[derive(Default)]
  struct Probe {
    ready: AtomicUsize,
    failed: Mutex<Vec<String>>,
    panics: bool,
  }

  struct Counted {
    probe: Arc<Probe>,
    io: Registration,
  }

  impl Source for Counted {
    fn ready(&self, _: Readiness) {
      self.probe.ready.fetch_add(1, Ordering::Relaxed);
      assert!(!self.probe.panics, "boom");
    }
    fn failed(&self, reason: String) {
      lock(&self.probe.failed).push(reason);
      self.io.deregister();
    }
  }

  fn setup(panics: bool) -> (Arc<Reactor>, Arc<Probe>, Arc<Counted>, OwnedFd) {
    let reactor = Arc::new(Reactor::new().unwrap());
    let probe = Arc::new(Probe { panics, ..Probe::default() });
    let (source, peer) = add(&reactor, &probe);
    (reactor, probe, source, peer)
  }

  fn add(reactor: &Arc<Reactor>, probe: &Arc<Probe>) -> (Arc<Counted>, OwnedFd) {
    let (ours, peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let source =
      reactor.register(Arc::new(ours), Interest::READ, |io, _| Counted { probe: probe.clone(), io }).unwrap();
    (source, peer)
  }

  fn turn(reactor: &Reactor) -> usize {
    reactor.turn(&mut [EpollEvent::empty(); 8], Some(100)).unwrap()
  }

  #[test]
  fn readiness_reaches_the_source_and_read_interest_can_be_dropped_and_restored() {
    let (reactor, probe, source, peer) = setup(false);
    nix::unistd::write(&peer, b"x").unwrap();
    turn(&reactor);
    assert_eq!(probe.ready.load(Ordering::Relaxed), 1);
    source.io.set_read(false);
    assert_eq!(turn(&reactor), 0, "not reading: the unread byte is not reported");
    source.io.set_read(true);
    turn(&reactor);
    assert_eq!(probe.ready.load(Ordering::Relaxed), 2, "level-triggered: reported again");
  }

  #[test]
  fn a_dropped_source_is_never_dispatched_and_its_slot_is_reused_with_a_new_generation() {
    let (reactor, probe, source, peer) = setup(false);
    let old = source.io.token;
    let fd = source.io.fd.clone();
    drop(source);
    nix::unistd::write(&peer, b"x").unwrap();
    assert!(Arc::strong_count(&fd) == 1, "the fd itself is still open");
    assert_eq!(turn(&reactor), 0);
    assert_eq!(probe.ready.load(Ordering::Relaxed), 0);
    assert_eq!(lock(&reactor.slab).get(old).map(|_| ()), None);
    let next = lock(&reactor.slab).reserve();
    assert_eq!(next as u32, old as u32, "same slot");
    assert_ne!(next >> 32, old >> 32, "new generation");
  }

  #[test]
  fn a_panicking_source_is_told_and_the_others_are_still_served() {
    let (reactor, probe, _source, peer) = setup(true);
    let other = Arc::new(Probe::default());
    let (_other_source, other_peer) = add(&reactor, &other);
    nix::unistd::write(&peer, b"x").unwrap();
    nix::unistd::write(&other_peer, b"x").unwrap();
    assert_eq!(turn(&reactor), 2);
    assert_eq!(lock(&probe.failed).len(), 1);
    assert!(lock(&probe.failed)[0].ends_with("boom"), "the reason names the panic");
    assert_eq!(other.ready.load(Ordering::Relaxed), 1);
    assert_eq!(turn(&reactor), 1, "the failed source gave up its fd; the other is still readable");
  }

  #[test]
  fn serving_a_set_known_ready_calls_a_sole_source_directly_and_waits_only_with_several() {
    let (reactor, probe, _source, peer) = setup(false);
    let mut ready = [EpollEvent::empty(); 8];
    nix::unistd::write(&peer, b"x").unwrap();
    reactor.serve_ready(&mut ready);
    assert_eq!(probe.ready.load(Ordering::Relaxed), 1);
    let other = Arc::new(Probe::default());
    let (_other_source, _other_peer) = add(&reactor, &other);
    reactor.serve_ready(&mut ready);
    assert_eq!(probe.ready.load(Ordering::Relaxed), 2, "level-triggered: still unread, so still ready");
    assert_eq!(other.ready.load(Ordering::Relaxed), 0, "with two sources, only the ready one is served");
  }

  #[test]
  fn stopping_tells_every_live_source() {
    let (reactor, probe, _source, _peer) = setup(false);
    reactor.stop("gone".into());
    assert_eq!(*lock(&probe.failed), ["gone"]);
  }
}
