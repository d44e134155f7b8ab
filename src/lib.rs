#![deny(clippy::all, unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
//! The napi boundary: the only place JavaScript values become Rust ones, and where the names and
//! numbers JavaScript shares with the core (event kinds, serializations, stdio codes, policies)
//! are defined. Every call here is short and non-blocking; waiting happens on the reactor thread.
//!
//! Each JavaScript environment calls `init` once and gets its own `Runtime`, kept as the
//! environment's napi instance data and dropped when the environment exits.
//!
//! Modules, each importing only those below it: `lib` → `runtime` → `cluster` → `channel`,
//! `listener`, `process` → `reactor`, `events`, `framing` (→ `v8codec`), `sockets`, `spawn`;
//! `notify` stands alone.

mod channel;
mod cluster;
mod events;
mod framing;
mod js_loop;
mod listener;
mod lock;
mod notify;
mod process;
mod reactor;
mod runtime;
mod sockets;
mod spawn;
mod uv;
mod v8codec;

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::os::fd::IntoRawFd;
use std::ptr;
use std::sync::Arc;

use napi::bindgen_prelude::{
  Array, Buffer, BufferSlice, FromNapiValue, Function, JsValue, ToNapiValue, Uint32Array, Unknown, ValueType,
};
use napi::{check_status, sys, Env};
use napi_derive::napi;

use events::{Event, Payload};
use framing::Mode;
use js_loop::JsLoop;
use runtime::{Ipc, Runtime, SpawnError};

/// stdio entries of `spawn`: a parent fd number (>= 0) or one of these.
#[napi]
pub const STDIO_PIPE: i32 = -1;
#[napi]
pub const STDIO_IPC: i32 = -2;
#[napi]
pub const STDIO_IGNORE: i32 = -3;

#[napi]
pub const SCHED_NONE: u32 = cluster::SCHED_NONE;
#[napi]
pub const SCHED_RR: u32 = cluster::SCHED_RR;
#[napi]
pub const SCHED_REUSEPORT: u32 = cluster::SCHED_REUSEPORT;

#[napi(string_enum = "lowercase")]
pub enum Serialization {
  Json,
  Advanced,
}

impl From<Serialization> for Mode {
  fn from(serialization: Serialization) -> Mode {
    match serialization {
      Serialization::Json => Mode::Json,
      Serialization::Advanced => Mode::Advanced,
    }
  }
}

#[napi]
pub enum EventKind {
  Messages,
  Handle,
  Written,
  Acked,
  Lost,
  Disconnect,
  Error,
  Oversized,
  Exit,
  Cluster,
}

/// Creates this environment's runtime; `notify` is called (at most once per batch) when events
/// are waiting.
#[napi(catch_unwind)]
pub fn init(env: Env, notify: Function<(), ()>) -> napi::Result<()> {
  if env.get_instance_data::<Runtime>()?.is_some() {
    return Ok(());
  }
  let tsfn = notify.build_threadsafe_function::<()>().weak::<true>().build_callback(|_| Ok(()))?;
  let reactor = reactor::global().map_err(napi::Error::from_reason)?;
  let runtime = Runtime::new(reactor.clone(), Some(tsfn)).map_err(|e| errno_error(e, "epoll_create1"))?;
  let (local, watch, sink) = runtime.loop_parts();
  env.set_instance_data(runtime, (), |context| drop(context.value))?;
  JsLoop::start(env.raw(), notify.raw(), dispatch_arguments, local, watch, sink);
  Ok(())
}

fn runtime(env: &Env) -> napi::Result<&'static Runtime> {
  let runtime = env.get_instance_data::<Runtime>()?;
  runtime
    .map(|r| &*r)
    .ok_or_else(|| napi::Error::from_reason("rust-cluster: init() was not called in this environment"))
}

#[napi(object)]
pub struct SpawnOptions {
  pub file: String,
  pub args: Vec<String>,
  pub env: Vec<String>,
  pub cwd: Option<String>,
  pub stdio: Vec<i32>,
  pub uid: Option<u32>,
  pub gid: Option<u32>,
  pub detached: bool,
  pub serialization: Serialization,
  pub max_message_size: f64,
  /// A cluster worker: the core then answers its NODE_CLUSTER requests.
  pub worker: bool,
}

#[napi(object)]
pub struct SpawnResult {
  /// Set when the child did not start; nothing else is then.
  pub errno: Option<i32>,
  pub id: u32,
  pub pid: i32,
  /// The parent's end of each 'pipe' entry, by stdio index; -1 elsewhere.
  pub fds: Vec<i32>,
}

#[napi(catch_unwind)]
pub fn spawn(env: Env, options: SpawnOptions) -> napi::Result<SpawnResult> {
  let runtime = runtime(&env)?;
  let stdio = options
    .stdio
    .iter()
    .map(|&entry| match entry {
      STDIO_PIPE => spawn::Stdio::Pipe,
      STDIO_IPC => spawn::Stdio::Ipc,
      STDIO_IGNORE => spawn::Stdio::Ignore,
      fd => spawn::Stdio::Fd(fd),
    })
    .collect();
  let ipc = options.stdio.iter().position(|&e| e == STDIO_IPC).map(|index| Ipc {
    index,
    mode: options.serialization.into(),
    limit: options.max_message_size as usize,
    worker: options.worker,
  });
  let plan = spawn::Options {
    file: options.file,
    args: options.args,
    env: options.env,
    cwd: options.cwd,
    stdio,
    uid: options.uid,
    gid: options.gid,
    detached: options.detached,
    // A worker outlives no primary: SIGKILL reaches it even if the primary is SIGKILLed.
    death_signal: options.worker.then_some(libc::SIGKILL),
  };
  match runtime.spawn(plan, ipc) {
    Ok(spawned) => {
      let fds = spawned.pipes.into_iter().map(|end| end.map_or(-1, IntoRawFd::into_raw_fd)).collect();
      Ok(SpawnResult { errno: None, id: spawned.id, pid: spawned.pid, fds })
    }
    Err(SpawnError::NotStarted(errno)) => Ok(SpawnResult { errno: Some(errno as i32), id: 0, pid: 0, fds: Vec::new() }),
    Err(SpawnError::Setup(what, errno)) => Err(errno_error(errno, what)),
  }
}

/// Adopts a connected stream socket (a duplicate of `fd`; the caller closes its own) as a message
/// channel between unrelated processes; returns the channel id.
#[napi(catch_unwind)]
pub fn open_channel(env: Env, fd: i32, serialization: Serialization, max_message_size: f64) -> napi::Result<u32> {
  let socket = sockets::duplicate(fd).map_err(|e| errno_error(e, "dup"))?;
  runtime(&env)?
    .open_channel(socket, serialization.into(), max_message_size as usize)
    .map_err(|e| errno_error(e, "ipc channel"))
}

/// Opens a write-only channel on a duplicate of `fd`, an IPC channel that Node itself reads (a
/// child's own end): a child's process.send() batched like the parent's. Returns the channel id.
#[napi(catch_unwind)]
pub fn open_writer(env: Env, fd: i32, serialization: Serialization) -> napi::Result<u32> {
  let socket = sockets::duplicate(fd).map_err(|e| errno_error(e, "dup"))?;
  runtime(&env)?.open_writer(socket, serialization.into()).map_err(|e| errno_error(e, "ipc writer"))
}

/// Queues `frames` frames (1 if not said) on channel `id`; returns the bytes still queued, or a
/// negative errno.
#[napi(catch_unwind)]
pub fn write(env: Env, id: u32, data: Unknown, frames: Option<u32>) -> napi::Result<i64> {
  let channel = runtime(&env)?.channel(id);
  let frames = u64::from(frames.unwrap_or(1));
  let result = match channel {
    Some(c) => with_bytes(data, |bytes| c.write(bytes, None, frames))?,
    None => Err(nix::errno::Errno::EPIPE),
  };
  Ok(queued_or_errno(result))
}

/// Queues a `NODE_HANDLE` frame carrying a duplicate of `fd`; the caller keeps its own fd.
#[napi(catch_unwind)]
pub fn write_handle(env: Env, id: u32, frame: Unknown, fd: i32) -> napi::Result<i64> {
  let channel = runtime(&env)?.channel(id);
  let result = match (channel, sockets::duplicate(fd)) {
    (Some(c), Ok(handle)) => with_bytes(frame, |bytes| c.write(bytes, Some(Arc::new(handle)), 1))?,
    (_, Err(errno)) => Err(errno),
    (None, Ok(_)) => Err(nix::errno::Errno::EPIPE),
  };
  Ok(queued_or_errno(result))
}

/// Policy for listening sockets created from now on (`SCHED_*`).
#[napi(catch_unwind)]
pub fn set_scheduling_policy(env: Env, policy: u32) -> napi::Result<()> {
  runtime(&env)?.cluster.set_policy(policy);
  Ok(())
}

/// Whether servers are keyed without the listen index for a fixed port (the running Node line's rule).
#[napi(catch_unwind)]
pub fn set_fixed_port_keys(env: Env, on: bool) -> napi::Result<()> {
  runtime(&env)?.cluster.set_fixed_port_keys(on);
  Ok(())
}

/// Sends systemd a notification (`VAR=VALUE` lines) on the socket `NOTIFY_SOCKET` names.
#[napi(catch_unwind)]
pub fn notify(path: String, message: String) -> napi::Result<()> {
  notify::notify(&path, &message).map_err(|e| errno_error(e, &format!("sd_notify to {path}")))
}

/// The round-robin server JavaScript made for `key`: its listening socket's fd (duplicated; the
/// caller closes its own), or a negative errno when listening failed.
#[napi(catch_unwind)]
pub fn adopt_server(env: Env, key: String, fd: i32) -> napi::Result<()> {
  let socket = if fd < 0 { Err(nix::errno::Errno::from_raw(-fd)) } else { sockets::duplicate(fd) };
  runtime(&env)?.cluster.adopt_server(&key, socket);
  Ok(())
}

/// Primary-side `worker.disconnect()`: tells the worker and releases its listening sockets.
#[napi(catch_unwind)]
pub fn disconnect_worker(env: Env, id: u32) -> napi::Result<()> {
  runtime(&env)?.cluster.disconnect(id);
  Ok(())
}

/// The fd number of channel `id`'s socket in this process (Node's `subprocess.channel.fd`), or -1.
#[napi(catch_unwind)]
pub fn channel_fd(env: Env, id: u32) -> napi::Result<i32> {
  Ok(runtime(&env)?.channel(id).map_or(-1, |channel| channel.raw_fd()))
}

/// Closes channel `id` at our end; returns how many chunks were written in full.
#[napi(catch_unwind)]
pub fn close(env: Env, id: u32) -> napi::Result<f64> {
  Ok(runtime(&env)?.close(id) as f64)
}

/// Signals child `id`; returns 0 or an errno.
#[napi(catch_unwind)]
pub fn kill(env: Env, id: u32, signal: i32) -> napi::Result<i32> {
  Ok(match runtime(&env)?.kill(id, signal) {
    Ok(()) => 0,
    Err(errno) => errno as i32,
  })
}

/// Frames and bytes each way on channel `id` (a child's, a worker's or an ipc channel).
#[napi(object)]
pub struct ChannelStats {
  pub id: u32,
  pub frames_in: f64,
  pub bytes_in: f64,
  pub frames_out: f64,
  pub bytes_out: f64,
}

/// A child's resident memory and CPU time, read from /proc (absent once it has gone).
#[napi(object)]
pub struct ChildStats {
  pub id: u32,
  pub pid: i32,
  pub rss: Option<f64>,
  pub cpu_seconds: Option<f64>,
}

/// Round-robin hand-offs to the worker on channel `id`.
#[napi(object)]
pub struct WorkerStats {
  pub id: u32,
  pub handed: f64,
  pub unanswered: f64,
}

/// A server the primary listens on for its workers.
#[napi(object)]
pub struct ServerStats {
  pub key: String,
  pub accepted: f64,
  pub waiting: f64,
}

#[napi(object)]
pub struct Stats {
  pub channels: Vec<ChannelStats>,
  pub children: Vec<ChildStats>,
  pub workers: Vec<WorkerStats>,
  pub servers: Vec<ServerStats>,
  /// Times the reactor thread read this environment's channels because its JavaScript was busy.
  pub busy_reads: f64,
}

/// Figures for monitoring, gathered without involving the children.
#[napi(catch_unwind)]
pub fn stats(env: Env) -> napi::Result<Stats> {
  let stats = runtime(&env)?.stats();
  let channels = stats.channels.into_iter().map(|(id, t)| ChannelStats {
    id,
    frames_in: t.frames_in as f64,
    bytes_in: t.bytes_in as f64,
    frames_out: t.frames_out as f64,
    bytes_out: t.bytes_out as f64,
  });
  let children = stats.children.into_iter().map(|(id, pid, usage)| ChildStats {
    id,
    pid,
    rss: usage.map(|u| u.rss_bytes as f64),
    cpu_seconds: usage.map(|u| u.cpu_seconds),
  });
  let workers = stats.cluster.workers.into_iter().map(|w| WorkerStats {
    id: w.id,
    handed: w.handed as f64,
    unanswered: w.unanswered as f64,
  });
  let servers = stats.cluster.servers.into_iter().map(|s| ServerStats {
    key: s.key,
    accepted: s.accepted as f64,
    waiting: s.waiting as f64,
  });
  Ok(Stats {
    channels: channels.collect(),
    children: children.collect(),
    workers: workers.collect(),
    servers: servers.collect(),
    busy_reads: stats.busy_reads as f64,
  })
}

/// Everything the core queued for this environment since the last call, in order, flat: four
/// slots per event, `[kind, id, payload, extra]`, which native.js turns into objects (far fewer
/// napi calls than an object per event built here).
///
/// | kind | payload | extra |
/// | --- | --- | --- |
/// | Messages | the frames back to back: text (JSON) or bytes (advanced) | where each ends, when several |
/// | Handle | the `NODE_HANDLE` frame | the fd, absent when NACKed |
/// | Written | chunks written so far | |
/// | Error, Oversized | what went wrong | |
/// | Exit | exit code or null | signal number or null |
/// | Cluster | the message as JSON | |
#[napi(catch_unwind)]
pub fn drain(env: &Env) -> napi::Result<Array<'_>> {
  let slots = slots(env, runtime(env)?.take())?;
  array_of(env, &slots)
}

/// What the JavaScript thread's loop calls dispatch with after reading: the slots themselves as
/// arguments, which cost V8 nothing to pass where an array costs a napi call per slot; a batch
/// too long for the stack goes as one array.
fn dispatch_arguments(raw: sys::napi_env) -> napi::Result<Vec<sys::napi_value>> {
  const MOST: usize = 256;
  let env = Env::from_raw(raw);
  let slots = slots(&env, runtime(&env)?.take())?;
  if slots.len() <= MOST {
    return Ok(slots);
  }
  Ok(vec![array_of(&env, &slots)?.raw()])
}

fn array_of<'e>(env: &'e Env, slots: &[sys::napi_value]) -> napi::Result<Array<'e>> {
  let mut array = env.create_array(slots.len() as u32)?;
  for (index, &slot) in slots.iter().enumerate() {
    // SAFETY: each slot is a value of this environment, alive in the caller's handle scope.
    array.set(index as u32, unsafe { Unknown::from_raw_unchecked(env.raw(), slot) })?;
  }
  Ok(array)
}

/// The events' values, four slots each (see `drain`), absent ones undefined.
fn slots(env: &Env, events: Vec<Event>) -> napi::Result<Vec<sys::napi_value>> {
  let mut slots = Slots { env: env.raw(), values: Vec::with_capacity(events.len() * 4) };
  for event in events {
    slots.put(event)?;
  }
  Ok(slots.values)
}

struct Slots {
  env: sys::napi_env,
  values: Vec<sys::napi_value>,
}

impl Slots {
  fn value<T: ToNapiValue>(&mut self, value: T) -> napi::Result<()> {
    // SAFETY: on the environment's thread, inside the caller's handle scope.
    self.values.push(unsafe { T::to_napi_value(self.env, value) }?);
    Ok(())
  }

  fn put(&mut self, event: Event) -> napi::Result<()> {
    let start = self.values.len();
    match event {
      // Taken by JavaScript: the bytes no longer count against the channel's read budget.
      Event::Messages { id, payload, credit } => {
        drop(credit);
        self.head(EventKind::Messages, id)?;
        self.payload(payload)?;
      }
      Event::Handle { id, frame, fd, credit } => {
        drop(credit);
        self.head(EventKind::Handle, id)?;
        self.payload(frame)?;
        // JavaScript takes ownership and wraps the fd in a net/dgram handle.
        if let Some(fd) = fd {
          self.value(fd.into_raw_fd())?;
        }
      }
      Event::Written { id, completed } => {
        self.head(EventKind::Written, id)?;
        self.value(completed as f64)?;
      }
      Event::HandleAcked { id } => self.head(EventKind::Acked, id)?,
      Event::HandleLost { id } => self.head(EventKind::Lost, id)?,
      Event::Disconnect { id } => self.head(EventKind::Disconnect, id)?,
      Event::Error { id, message } => {
        self.head(EventKind::Error, id)?;
        self.value(message)?;
      }
      Event::Oversized { id, message } => {
        self.head(EventKind::Oversized, id)?;
        self.value(message)?;
      }
      Event::Exit { id, code, signal } => {
        self.head(EventKind::Exit, id)?;
        self.value(code)?;
        self.value(signal)?;
      }
      Event::Cluster { id, json } => {
        self.head(EventKind::Cluster, id)?;
        self.value(json)?;
      }
    }
    while self.values.len() < start + 4 {
      self.value(())?;
    }
    Ok(())
  }

  fn head(&mut self, kind: EventKind, id: u32) -> napi::Result<()> {
    self.value(kind as u32)?;
    self.value(id)
  }

  /// A payload and, when it holds several messages, where each ends: a typed array for the ends
  /// costs an external buffer and its finalizer, worth it only when shared by several messages.
  fn payload(&mut self, payload: Payload) -> napi::Result<()> {
    let ends = match payload {
      Payload::Text(text, ends) => {
        self.value(text)?;
        ends
      }
      Payload::Binary(bytes, ends) if bytes.len() > LATIN1_PAYLOAD => {
        self.value(Buffer::from(bytes))?;
        ends
      }
      Payload::Ascii(bytes, ends) | Payload::Binary(bytes, ends) => {
        self.value(Env::from_raw(self.env).create_string_latin1(&bytes)?)?;
        ends
      }
    };
    if ends.len() > 1 {
      self.value(Uint32Array::from(ends))?;
    }
    Ok(())
  }
}

/// Up to this size a binary payload goes to JavaScript as a latin1 string, one character a byte:
/// a plain string, where a Buffer made here costs an ArrayBuffer, its backing store and setting
/// its prototype (~2 µs of a round trip on Node 26). Larger ones go as an external Buffer, not
/// copied.
const LATIN1_PAYLOAD: usize = 64 << 10;

/// Strings up to this many UTF-16 units are written out as UTF-8 on the stack (3 bytes a unit
/// at most).
const STACK_UNITS: usize = 1024;
/// Up to this many units a string's UTF-8 goes to a heap buffer sized for the worst case, in one
/// napi call; a longer one is measured first rather than hold three times its size.
const ONE_PASS_UNITS: usize = 1 << 20;

/// Hands a string's or a buffer's bytes on with as few copies and napi calls as it can: a buffer
/// is borrowed, not taken as `Buffer` (that would take and drop a napi reference on every write).
fn with_bytes<R>(data: Unknown, write: impl FnOnce(Cow<[u8]>) -> R) -> napi::Result<R> {
  let (env, value) = (data.value().env, data.raw());
  if data.get_type()? != ValueType::String {
    // SAFETY: a value of this environment, on its thread, for the length of this call.
    let buffer = unsafe { BufferSlice::from_napi_value(env, value) }?;
    return Ok(write(Cow::Borrowed(&buffer)));
  }
  let mut units = 0;
  // SAFETY: a string of this environment; with no buffer given, napi only reports its length.
  check_status!(unsafe { sys::napi_get_value_string_utf16(env, value, ptr::null_mut(), 0, &mut units) })?;
  if units <= STACK_UNITS {
    let mut stack = [MaybeUninit::<u8>::uninit(); STACK_UNITS * 3 + 1];
    let bytes = utf8_into(env, value, &mut stack)?;
    return Ok(write(Cow::Borrowed(bytes)));
  }
  let capacity = if units <= ONE_PASS_UNITS {
    units * 3 + 1
  } else {
    let mut length = 0;
    // SAFETY: as above; with no buffer given, napi only measures the UTF-8.
    check_status!(unsafe { sys::napi_get_value_string_utf8(env, value, ptr::null_mut(), 0, &mut length) })?;
    length + 1
  };
  let mut heap = Vec::with_capacity(capacity);
  let length = utf8_into(env, value, heap.spare_capacity_mut())?.len();
  // SAFETY: `utf8_into` initialized the first `length` bytes.
  unsafe { heap.set_len(length) };
  Ok(write(Cow::Owned(heap)))
}

/// Writes string `value` as UTF-8 (lone surrogates replaced) into `room`, which has space for it
/// and a NUL; returns the bytes written.
fn utf8_into(env: sys::napi_env, value: sys::napi_value, room: &mut [MaybeUninit<u8>]) -> napi::Result<&[u8]> {
  let mut length = 0;
  // SAFETY: a string of this environment, on its thread; napi writes at most `room.len()` bytes.
  check_status!(unsafe {
    sys::napi_get_value_string_utf8(env, value, room.as_mut_ptr().cast(), room.len(), &mut length)
  })?;
  // SAFETY: napi initialized the first `length` bytes of `room`.
  Ok(unsafe { std::slice::from_raw_parts(room.as_ptr().cast::<u8>(), length) })
}

fn queued_or_errno(result: Result<usize, nix::errno::Errno>) -> i64 {
  match result {
    Ok(queued) => queued as i64,
    Err(errno) => -(errno as i64),
  }
}

fn errno_error(errno: nix::errno::Errno, what: &str) -> napi::Error {
  napi::Error::from_reason(format!("{what}: {}", errno.desc()))
}
