//! Reading on the JavaScript thread while its event loop waits, as Node does, with the reactor
//! thread taking over whenever JavaScript stays busy.
//!
//! Each environment's reading channels are registered in an epoll set of their own (a `Reactor`
//! that no thread turns by itself). Two parties serve that set:
//! - the JavaScript thread, through a uv_poll on the set in its own libuv loop. A message that
//!   arrives while JavaScript waits for I/O wakes that loop, is read and framed in Rust and handed
//!   to JavaScript in the same callback: one wake-up per message, as with Node's own channel,
//!   where the reactor would cost its own wake-up and then JavaScript's.
//! - the reactor thread, through a `Watch` on the same set, armed when JavaScript has been away
//!   from its loop's poll for a tick (`TICK`): handle ACKs, round-robin replies and the read
//!   budget then wait a few milliseconds at most for a busy JavaScript, never for its work to end.
//!
//! The JavaScript thread says when it comes back from its poll (the check phase, and every
//! dispatch, in `Runtime::take`) and when it is about to block in it again (the prepare phase,
//! which also disarms the watch); each costs it an atomic or two, no system call. While it is
//! busy a 1 ms timer ticks on the reactor thread, which arms the watch when a whole tick went by
//! without JavaScript coming back. A tick that finds it waiting slows the timer to 10 ms, so a
//! busy spell that starts then is caught within 11 ms; the timer stops once JavaScript waits and
//! nothing is left unread. One gap remains: another handle's I/O callback that starts while
//! JavaScript is idle and the timer stopped runs without the watch, so what arrives meanwhile
//! waits for that callback to return (as everything does with Node's channel).

use std::ffi::{c_int, c_void};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use napi::sys;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::EpollEvent;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use once_cell::sync::OnceCell;

use crate::events::Sink;
use crate::lock::lock;
use crate::reactor::{Interest, Reactor, Readiness, Registration, Source};
use crate::sockets;
use crate::uv::{self, Uv};

/// Ready channels taken per turn of the set.
const BATCH: usize = 64;
/// How long JavaScript may stay away from its loop before the reactor serves its channels.
const TICK: Duration = Duration::from_millis(1);
/// The tick while JavaScript was found waiting: each tick wakes the reactor thread (~25 µs of CPU
/// on a VM), and a loop that mostly waits, as in a request/response exchange, needs no more than
/// this to be caught busy; the first tick that finds it running goes back to `TICK`.
const SLOW_TICK: Duration = Duration::from_millis(10);

/// The reactor thread's hold on an environment's channel set, and what it knows of that
/// environment's loop.
pub struct Watch {
  local: Arc<Reactor>,
  io: Registration,
  ready: Mutex<Vec<EpollEvent>>,
  /// JavaScript waits, or is about to wait, in its loop's poll.
  idle: AtomicBool,
  /// Bumped each time JavaScript comes back from its poll; `seen` is its value at the last tick.
  progress: AtomicU64,
  seen: AtomicU64,
  /// Turns of the set the reactor thread read something in: JavaScript was busy.
  served: AtomicU64,
  ticker: OnceCell<Arc<Ticker>>,
}

/// What a tick decided: the next tick's period, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
  Fast,
  Slow,
  Stop,
}

impl Tick {
  fn period(self) -> Option<Duration> {
    match self {
      Tick::Fast => Some(TICK),
      Tick::Slow => Some(SLOW_TICK),
      Tick::Stop => None,
    }
  }
}

impl Watch {
  /// Puts `local`'s set in `reactor`, armed: JavaScript is running its script until its loop
  /// says otherwise.
  pub fn new(reactor: &Arc<Reactor>, local: Arc<Reactor>) -> Result<Arc<Watch>, Errno> {
    let fd = Arc::new(sockets::duplicate(local.fd().as_raw_fd())?);
    let watch = reactor.register(fd, Interest::READ, |io, _| Watch {
      local,
      io,
      ready: Mutex::new(vec![EpollEvent::empty(); BATCH]),
      idle: AtomicBool::new(false),
      progress: AtomicU64::new(0),
      seen: AtomicU64::new(0),
      served: AtomicU64::new(0),
      ticker: OnceCell::new(),
    })?;
    let _ = watch.ticker.set(Ticker::new(reactor, Arc::downgrade(&watch))?);
    Ok(watch)
  }

  /// The reactor serves the set while armed. Under the registration's lock, so the JavaScript
  /// thread disarming and a tick arming cannot cross; no system call when nothing changes.
  fn arm(&self, on: bool) {
    self.io.set_read(on);
  }

  /// On the JavaScript thread: it is back from its poll (and will run JavaScript).
  pub fn busy(&self) {
    self.progress.fetch_add(1, Ordering::AcqRel);
    self.idle.store(false, Ordering::Release);
    if let Some(ticker) = self.ticker.get() {
      ticker.start();
    }
  }

  /// On the JavaScript thread: its loop is about to block in its poll, where it reads the set.
  fn waiting(&self) {
    self.idle.store(true, Ordering::Release);
    self.arm(false);
  }

  /// On the reactor thread, every `TICK` while it runs.
  fn tick(&self) -> Tick {
    let progress = self.progress.load(Ordering::Acquire);
    let moved = self.seen.swap(progress, Ordering::AcqRel) != progress;
    if moved {
      return if self.idle.load(Ordering::Acquire) { Tick::Slow } else { Tick::Fast };
    }
    // A whole tick without JavaScript coming back from its poll: busy (or, idle with the set
    // unread, inside another handle's callback). Either way the set is ours until it waits again.
    if !self.idle.load(Ordering::Acquire) || self.unread() {
      self.arm(true);
    }
    Tick::Stop
  }

  /// How many times the reactor thread read the set for a busy JavaScript.
  pub fn served(&self) -> u64 {
    self.served.load(Ordering::Relaxed)
  }

  fn unread(&self) -> bool {
    let mut fds = [PollFd::new(self.local.fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
  }
}

impl Source for Watch {
  fn ready(&self, _: Readiness) {
    if matches!(self.local.turn(&mut lock(&self.ready), Some(0)), Ok(n) if n > 0) {
      self.served.fetch_add(1, Ordering::Relaxed);
    }
  }

  fn failed(&self, reason: String) {
    self.io.deregister();
    self.local.stop(reason);
  }
}

/// The 1 ms timer that runs on the reactor while JavaScript is busy.
struct Ticker {
  io: Registration,
  timer: TimerFd,
  watch: Weak<Watch>,
  /// The period the timer runs at, if it runs. Changed under this lock, and a tick decides under
  /// it, so a stop never crosses a start.
  ticking: Mutex<Option<Duration>>,
}

impl Ticker {
  fn new(reactor: &Arc<Reactor>, watch: Weak<Watch>) -> Result<Arc<Ticker>, Errno> {
    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC | TimerFlags::TFD_NONBLOCK)?;
    let fd = Arc::new(sockets::duplicate(timer.as_fd().as_raw_fd())?);
    reactor.register(fd, Interest::READ, |io, _| Ticker { io, timer, watch, ticking: Mutex::new(None) })
  }

  fn start(&self) {
    let mut ticking = lock(&self.ticking);
    if ticking.is_none() {
      self.run(&mut ticking, Some(TICK));
    }
  }

  /// Under the `ticking` lock: the timer at `period`, or stopped.
  fn run(&self, ticking: &mut Option<Duration>, period: Option<Duration>) {
    let set = match period {
      Some(period) => self.timer.set(Expiration::Interval(period.into()), TimerSetTimeFlags::empty()),
      None => self.timer.unset(),
    };
    *ticking = if set.is_ok() { period } else { None };
  }
}

impl Source for Ticker {
  fn ready(&self, _: Readiness) {
    // SAFETY: the registration keeps its duplicate of the timer's fd open while we are served.
    let fd = unsafe { BorrowedFd::borrow_raw(self.io.fd()) };
    let _ = nix::unistd::read(fd, &mut [0u8; 8]);
    let mut ticking = lock(&self.ticking);
    let next = self.watch.upgrade().map_or(Tick::Stop, |watch| watch.tick()).period();
    if ticking.is_some() && *ticking != next {
      self.run(&mut ticking, next);
    }
  }

  fn failed(&self, _: String) {
    self.io.deregister();
  }
}

/// The JavaScript thread's side: a poll, a prepare and a check handle on its libuv loop. Lives
/// on that thread, from `start` until `stop` in the environment's cleanup.
pub struct JsLoop(*mut Hooks);

struct Hooks {
  uv: &'static Uv,
  event_loop: *mut uv::Loop,
  handles: [Box<[u64]>; 3],
  /// Handles not yet closed; the last close frees this.
  open: usize,
  /// The set could not be polled: the reactor keeps it for good.
  failed: bool,
  local: Arc<Reactor>,
  watch: Arc<Watch>,
  sink: Arc<Sink>,
  ready: Vec<EpollEvent>,
  env: sys::napi_env,
  dispatch: sys::napi_ref,
  arguments: Arguments,
  context: sys::napi_async_context,
}

/// Takes the environment's queued events as dispatch's arguments; on its thread, in a handle scope.
pub type Arguments = fn(sys::napi_env) -> napi::Result<Vec<sys::napi_value>>;

const POLL: usize = 0;
const PREPARE: usize = 1;
const CHECK: usize = 2;

impl JsLoop {
  /// Hooks `local` into `env`'s loop, calling `dispatch` (a JavaScript function) with what
  /// `arguments` makes of the events it read, until the environment's cleanup. Where libuv is not
  /// reachable, or a step fails, the reactor serves the set alone.
  pub fn start(
    env: sys::napi_env,
    dispatch: sys::napi_value,
    arguments: Arguments,
    local: Arc<Reactor>,
    watch: Arc<Watch>,
    sink: Arc<Sink>,
  ) {
    let Some(uv) = uv::get() else { return };
    let mut event_loop = ptr::null_mut();
    let mut reference = ptr::null_mut();
    let mut name = ptr::null_mut();
    let mut context = ptr::null_mut();
    let label = "rust-cluster:channels";
    // SAFETY: called on the environment's own thread from a napi call, with values it gave us.
    let ready = unsafe {
      sys::napi_get_uv_event_loop(env, &mut event_loop) == sys::Status::napi_ok
        && sys::napi_create_reference(env, dispatch, 1, &mut reference) == sys::Status::napi_ok
        && sys::napi_create_string_utf8(env, label.as_ptr().cast(), label.len() as isize, &mut name)
          == sys::Status::napi_ok
        && sys::napi_async_init(env, ptr::null_mut(), name, &mut context) == sys::Status::napi_ok
    };
    let hooks = Box::into_raw(Box::new(Hooks {
      uv,
      event_loop: event_loop.cast(),
      handles: [uv::handle_memory(uv, uv::POLL), uv::handle_memory(uv, uv::PREPARE), uv::handle_memory(uv, uv::CHECK)],
      open: 0,
      failed: false,
      local,
      watch,
      sink,
      ready: vec![EpollEvent::empty(); BATCH],
      env,
      dispatch: reference,
      arguments,
      context,
    }));
    let js_loop = JsLoop(hooks);
    // SAFETY: `hooks` is ours until the handles close; the loop and the environment are this
    // thread's. The cleanup hook is the loop's owner from here on, so a loop that could not be
    // handed to it stops now.
    let started = ready
      && unsafe { js_loop.open_handles() }
      && unsafe { sys::napi_add_env_cleanup_hook(env, Some(on_env_cleanup), hooks.cast()) } == sys::Status::napi_ok;
    if !started {
      js_loop.stop();
    }
  }

  /// Starts the three handles, unref'd: JavaScript alone decides what keeps the loop alive.
  ///
  /// # Safety
  /// On the environment's thread, once.
  unsafe fn open_handles(&self) -> bool {
    // SAFETY: the caller's promise; each handle's memory lives in `Hooks` until its close.
    unsafe {
      let hooks = &mut *self.0;
      let uv = hooks.uv;
      let fd = hooks.local.fd().as_raw_fd();
      let [poll, prepare, check] = [POLL, PREPARE, CHECK].map(|i| hooks.handles[i].as_mut_ptr().cast::<uv::Handle>());
      if (uv.poll_init)(hooks.event_loop, poll, fd) != 0 {
        return false;
      }
      (uv.prepare_init)(hooks.event_loop, prepare);
      (uv.check_init)(hooks.event_loop, check);
      hooks.open = 3;
      for handle in [poll, prepare, check] {
        uv::set_data(handle, self.0.cast());
        (uv.unref)(handle);
      }
      (uv.prepare_start)(prepare, on_prepare);
      (uv.check_start)(check, on_check);
      (uv.poll_start)(poll, uv::READABLE, on_readable) == 0
    }
  }

  /// The environment is going: the reactor takes the set back for the runtime's last acts, and
  /// the handles close (libuv frees them on the loop's next run, which Node does at teardown).
  pub fn stop(self) {
    // SAFETY: on the environment's thread, in its cleanup, while napi calls are still allowed.
    unsafe {
      let hooks = &mut *self.0;
      hooks.failed = true;
      hooks.watch.arm(true);
      if !hooks.dispatch.is_null() {
        sys::napi_delete_reference(hooks.env, hooks.dispatch);
      }
      if !hooks.context.is_null() {
        sys::napi_async_destroy(hooks.env, hooks.context);
      }
      if hooks.open == 0 {
        drop(Box::from_raw(self.0));
        return;
      }
      for index in [POLL, PREPARE, CHECK] {
        (hooks.uv.close)(hooks.handles[index].as_mut_ptr().cast(), on_close);
      }
    }
  }
}

/// The hooks a handle belongs to.
///
/// # Safety
/// `handle` is one of ours, not yet closed.
unsafe fn hooks<'a>(handle: *mut uv::Handle) -> &'a mut Hooks {
  // SAFETY: `data` was set to the hooks, which outlive every handle (the caller's promise).
  unsafe { &mut *uv::data(handle).cast::<Hooks>() }
}

unsafe extern "C" fn on_readable(handle: *mut uv::Handle, status: c_int, _events: c_int) {
  // SAFETY: libuv calls this for our open poll handle, on the loop's thread.
  let hooks = unsafe { hooks(handle) };
  if status < 0 {
    hooks.failed = true;
    hooks.watch.arm(true);
    return;
  }
  // Reading is Rust's; JavaScript runs from the dispatch, whose drain tells the watch it is busy.
  hooks.local.serve_ready(&mut hooks.ready);
  if hooks.sink.pending() {
    // SAFETY: on the loop's thread, outside any JavaScript call, with the environment alive.
    unsafe { call_dispatch(hooks) };
  }
}

unsafe extern "C" fn on_prepare(handle: *mut uv::Handle) {
  // SAFETY: libuv calls this for our open prepare handle, on the loop's thread.
  let hooks = unsafe { hooks(handle) };
  // SAFETY: the loop is the one this callback runs on.
  let blocks = unsafe { (hooks.uv.backend_timeout)(hooks.event_loop) } != 0;
  if blocks && !hooks.failed {
    hooks.watch.waiting();
  }
}

unsafe extern "C" fn on_check(handle: *mut uv::Handle) {
  // SAFETY: libuv calls this for our open check handle, on the loop's thread.
  unsafe { hooks(handle) }.watch.busy();
}

unsafe extern "C" fn on_env_cleanup(hooks: *mut c_void) {
  JsLoop(hooks.cast()).stop();
}

unsafe extern "C" fn on_close(handle: *mut uv::Handle) {
  // SAFETY: libuv is done with `handle`; the hooks are freed after the last of the three.
  let hooks = unsafe { uv::data(handle) }.cast::<Hooks>();
  // SAFETY: as above; nothing else touches the hooks any more.
  unsafe {
    (*hooks).open -= 1;
    if (*hooks).open == 0 {
      drop(Box::from_raw(hooks));
    }
  }
}

/// Calls the environment's dispatch with the events queued, as Node calls into JavaScript from
/// its loop: in a callback scope (nextTicks and microtasks run after it), an exception going to
/// 'uncaughtException'.
///
/// # Safety
/// On the loop's thread, outside any JavaScript call, with the environment alive.
unsafe fn call_dispatch(hooks: &Hooks) {
  let env = hooks.env;
  // SAFETY: the caller's promise; every value used comes from this environment.
  unsafe {
    let mut scope = ptr::null_mut();
    if sys::napi_open_handle_scope(env, &mut scope) != sys::Status::napi_ok {
      return;
    }
    let status = match (hooks.arguments)(env) {
      Ok(arguments) if arguments.is_empty() => sys::Status::napi_ok,
      Ok(arguments) => {
        let mut function = ptr::null_mut();
        let mut result = ptr::null_mut();
        sys::napi_get_reference_value(env, hooks.dispatch, &mut function);
        // The receiver must be an object; dispatch ignores it, and itself is at hand.
        sys::napi_make_callback(
          env,
          hooks.context,
          function,
          function,
          arguments.len(),
          arguments.as_ptr(),
          &mut result,
        )
      }
      Err(error) => {
        napi::JsError::from(error).throw_into(env);
        sys::Status::napi_pending_exception
      }
    };
    if status == sys::Status::napi_pending_exception {
      let mut error = ptr::null_mut();
      sys::napi_get_and_clear_last_exception(env, &mut error);
      sys::napi_fatal_exception(env, error);
    }
    sys::napi_close_handle_scope(env, scope);
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
  use std::os::fd::OwnedFd;
  use std::sync::atomic::{AtomicUsize, Ordering};

  /// A channel stand-in: reads whatever is there, counts the turns that found it readable.
  struct Reader {
    io: Registration,
    served: AtomicUsize,
    failed: Mutex<Option<String>>,
  }

  impl Source for Reader {
    fn ready(&self, _: Readiness) {
      // SAFETY: the registration keeps the fd open while its source is served.
      let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.io.fd()) };
      let _ = nix::unistd::read(fd, &mut [0u8; 64]);
      self.served.fetch_add(1, Ordering::Relaxed);
    }
    fn failed(&self, reason: String) {
      *lock(&self.failed) = Some(reason);
    }
  }

  fn setup() -> (Arc<Reactor>, Arc<Watch>, Arc<Reader>, OwnedFd) {
    let reactor = Arc::new(Reactor::new().unwrap());
    let local = Arc::new(Reactor::new().unwrap());
    let watch = Watch::new(&reactor, local.clone()).unwrap();
    let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
    let (ours, peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap();
    let reader = local
      .register(Arc::new(ours), Interest::READ, |io, _| Reader {
        io,
        served: AtomicUsize::new(0),
        failed: Mutex::default(),
      })
      .unwrap();
    (reactor, watch, reader, peer)
  }

  fn turn(reactor: &Reactor) -> usize {
    reactor.turn(&mut [EpollEvent::empty(); 8], Some(50)).unwrap()
  }

  #[test]
  fn the_reactor_serves_an_environments_channels_only_while_armed() {
    let (reactor, watch, reader, peer) = setup();
    nix::unistd::write(&peer, b"x").unwrap();
    assert_eq!(turn(&reactor), 1, "armed from the start: JavaScript is running its script");
    assert_eq!(reader.served.load(Ordering::Relaxed), 1);

    watch.waiting();
    nix::unistd::write(&peer, b"y").unwrap();
    assert_eq!(turn(&reactor), 0, "JavaScript waits in its loop, which reads it");
    assert_eq!(reader.served.load(Ordering::Relaxed), 1);

    watch.arm(true);
    assert_eq!(turn(&reactor), 1, "armed again: what waited is served at once");
    assert_eq!(reader.served.load(Ordering::Relaxed), 2);
  }

  #[test]
  fn a_tick_without_javascript_coming_back_arms_the_watch() {
    let (_reactor, watch, _reader, _peer) = setup();
    watch.waiting();
    watch.busy();
    assert_eq!(watch.tick(), Tick::Fast, "JavaScript came back since the last tick, and runs");
    assert!(!watch.io.reading());
    watch.busy();
    assert_eq!(watch.tick(), Tick::Fast);
    assert_eq!(watch.tick(), Tick::Stop, "a whole tick busy");
    assert!(watch.io.reading(), "the reactor serves the set now");
  }

  #[test]
  fn an_idle_loop_stops_the_ticks_unless_its_set_waits_unread() {
    let (_reactor, watch, _reader, peer) = setup();
    watch.busy();
    watch.waiting();
    assert_eq!(watch.tick(), Tick::Slow, "came back, and waits again: slower ticks catch it busy");
    assert_eq!(watch.tick(), Tick::Stop);
    assert!(!watch.io.reading(), "waiting with nothing unread: the loop has it");

    watch.busy();
    watch.waiting();
    nix::unistd::write(&peer, b"x").unwrap();
    assert_eq!(watch.tick(), Tick::Slow);
    assert_eq!(watch.tick(), Tick::Stop);
    assert!(watch.io.reading(), "said idle, yet a tick left the set unread");
  }

  #[test]
  fn a_stopped_reactor_tells_the_channels_behind_the_watch() {
    let (reactor, _watch, reader, _peer) = setup();
    reactor.stop("gone".into());
    assert_eq!(lock(&reader.failed).as_deref(), Some("gone"));
  }
}
