#![deny(clippy::all)]
//! The napi boundary: the only place JavaScript values become Rust ones. Every call here is
//! short and non-blocking; waiting happens on the reactor thread.

mod channel;
mod cluster;
mod events;
mod framing;
mod listener;
mod lock;
mod process;
mod reactor;
mod spawn;
mod v8codec;

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{Buffer, Either, Function};
use napi_derive::napi;

use events::{Event, Payload};
use framing::Mode;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// Registers the function the reactor calls (at most once per batch) when events are waiting.
#[napi(catch_unwind)]
pub fn init(notify: Function<(), ()>) -> napi::Result<()> {
  let tsfn = notify.build_threadsafe_function::<()>().weak::<true>().build_callback(|_| Ok(()))?;
  events::set_notify(tsfn);
  reactor::start();
  Ok(())
}

/// stdio entries: a parent fd number (>= 0) or one of these (lib/child.js uses the same codes).
const STDIO_PIPE: i32 = -1;
const STDIO_IPC: i32 = -2;
const STDIO_IGNORE: i32 = -3;

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
  pub serialization: String,
  pub max_message_size: f64,
  /// Cluster worker id: the Rust side then answers the worker's NODE_CLUSTER requests.
  pub worker: Option<u32>,
}

#[napi(object)]
pub struct SpawnResult {
  /// Set when the spawn failed; nothing else is then.
  pub errno: Option<i32>,
  pub id: u32,
  pub pid: i32,
  /// The parent's end of each 'pipe' entry, by stdio index; -1 elsewhere.
  pub fds: Vec<i32>,
}

#[napi(catch_unwind)]
pub fn spawn(options: SpawnOptions) -> napi::Result<SpawnResult> {
  let mode = parse_mode(&options.serialization)?;
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
  let ipc_index = options.stdio.iter().position(|&e| e == STDIO_IPC);
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
    death_signal: options.worker.map(|_| libc::SIGKILL),
  };
  let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
  let spawned = match spawn::spawn(&plan) {
    Ok(spawned) => spawned,
    Err(errno) => return Ok(SpawnResult { errno: Some(errno as i32), id, pid: 0, fds: Vec::new() }),
  };
  let mut fds = Vec::with_capacity(spawned.parent_ends.len());
  for (index, end) in spawned.parent_ends.into_iter().enumerate() {
    match end {
      Some(end) if Some(index) == ipc_index => {
        let limit = options.max_message_size as usize;
        channel::open(id, end, mode, limit, options.worker).map_err(|e| errno_error(e, "ipc channel"))?;
        fds.push(-1);
      }
      Some(end) => fds.push(end.into_raw_fd()),
      None => fds.push(-1),
    }
  }
  process::watch(id, spawned.pid).map_err(|e| errno_error(e, "pidfd_open"))?;
  Ok(SpawnResult { errno: None, id, pid: spawned.pid, fds })
}

/// Adopts a connected stream socket (a duplicate of `fd`; the caller closes its own) as a message
/// channel between unrelated processes; returns the channel id.
#[napi(catch_unwind)]
pub fn open_channel(fd: i32, serialization: String, max_message_size: f64) -> napi::Result<u32> {
  let mode = parse_mode(&serialization)?;
  let socket = duplicate(fd).map_err(|e| errno_error(e, "dup"))?;
  let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
  channel::open(id, socket, mode, max_message_size as usize, None).map_err(|e| errno_error(e, "ipc channel"))?;
  Ok(id)
}

/// Opens a write-only channel on a duplicate of `fd`, an IPC channel that Node itself reads (a
/// child's own end): a child's process.send() batched like the parent's. Returns the channel id.
#[napi(catch_unwind)]
pub fn open_writer(fd: i32, serialization: String) -> napi::Result<u32> {
  let mode = parse_mode(&serialization)?;
  let socket = duplicate(fd).map_err(|e| errno_error(e, "dup"))?;
  let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
  channel::open_writer(id, socket, mode).map_err(|e| errno_error(e, "ipc writer"))?;
  Ok(id)
}

fn parse_mode(name: &str) -> napi::Result<Mode> {
  Mode::parse(name).ok_or_else(|| napi::Error::from_reason(format!("unknown serialization '{name}'")))
}

/// Queues bytes on channel `id`; returns the bytes still queued, or a negative errno.
#[napi(catch_unwind)]
pub fn write(id: u32, data: Either<String, Buffer>) -> i64 {
  queued_or_errno(channel::write(id, bytes_of(data), None))
}

/// Queues a `NODE_HANDLE` frame carrying a duplicate of `fd`; the caller keeps its own fd.
#[napi(catch_unwind)]
pub fn write_handle(id: u32, frame: Either<String, Buffer>, fd: i32) -> i64 {
  let handle = match duplicate(fd) {
    Ok(handle) => handle,
    Err(errno) => return -(errno as i64),
  };
  queued_or_errno(channel::write(id, bytes_of(frame), Some(Arc::new(handle))))
}

/// Policy for listening sockets created from now on: 1 shared, 2 round-robin, 3 reuseport.
#[napi(catch_unwind)]
pub fn set_scheduling_policy(policy: u32) {
  cluster::set_policy(policy);
}

/// Primary-side `worker.disconnect()`: tells the worker and releases its listening sockets.
#[napi(catch_unwind)]
pub fn disconnect_worker(id: u32) {
  cluster::disconnect(id);
}

/// The fd number of channel `id`'s socket in this process (Node's `subprocess.channel.fd`), or -1.
#[napi(catch_unwind)]
pub fn channel_fd(id: u32) -> i32 {
  channel::get(id).map_or(-1, |channel| channel.raw_fd())
}

/// Closes channel `id` at our end; returns how many chunks were written in full.
#[napi(catch_unwind)]
pub fn close(id: u32) -> f64 {
  channel::close(id) as f64
}

/// Signals child `id`; returns 0 or an errno.
#[napi(catch_unwind)]
pub fn kill(id: u32, signal: i32) -> i32 {
  match process::kill(id, signal) {
    Ok(()) => 0,
    Err(errno) => errno as i32,
  }
}

#[napi(object)]
pub struct JsEvent {
  pub kind: String,
  pub id: u32,
  pub text: Option<String>,
  pub data: Option<Buffer>,
  pub fd: Option<i32>,
  pub code: Option<i32>,
  pub signal: Option<i32>,
  pub count: Option<f64>,
}

/// Everything the reactor queued since the last call, in order.
#[napi(catch_unwind)]
pub fn drain() -> Vec<JsEvent> {
  events::take().into_iter().map(to_js).collect()
}

fn to_js(event: Event) -> JsEvent {
  let mut out = JsEvent { kind: String::new(), id: 0, text: None, data: None, fd: None, code: None, signal: None, count: None };
  let (kind, id) = match event {
    Event::Messages { id, payload } => {
      set_payload(&mut out, payload);
      ("messages", id)
    }
    Event::Handle { id, payload, fd } => {
      set_payload(&mut out, payload);
      // JavaScript takes ownership and wraps the fd in a net/dgram handle.
      out.fd = fd.map(IntoRawFd::into_raw_fd);
      ("handle", id)
    }
    Event::Written { id, completed } => {
      out.count = Some(completed as f64);
      ("written", id)
    }
    Event::HandleAcked { id } => ("acked", id),
    Event::HandleLost { id } => ("lost", id),
    Event::Disconnect { id } => ("disconnect", id),
    Event::Error { id, message } => {
      out.text = Some(message);
      ("error", id)
    }
    Event::Exit { id, code, signal } => {
      out.code = code;
      out.signal = signal;
      ("exit", id)
    }
    Event::Cluster { id, json } => {
      out.text = Some(json);
      ("cluster", id)
    }
  };
  out.kind = kind.to_owned();
  out.id = id;
  out
}

fn set_payload(out: &mut JsEvent, payload: Payload) {
  match payload {
    Payload::Text(text) => out.text = Some(text),
    Payload::Binary(bytes) => out.data = Some(bytes.into()),
  }
}

fn bytes_of(data: Either<String, Buffer>) -> Vec<u8> {
  match data {
    Either::A(text) => text.into_bytes(),
    Either::B(buffer) => buffer.to_vec(),
  }
}

fn queued_or_errno(result: Result<usize, nix::errno::Errno>) -> i64 {
  match result {
    Ok(queued) => queued as i64,
    Err(errno) => -(errno as i64),
  }
}

fn duplicate(fd: RawFd) -> Result<OwnedFd, nix::errno::Errno> {
  // SAFETY: F_DUPFD_CLOEXEC on a caller-supplied fd; failure is reported, never assumed.
  let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
  if copy < 0 {
    return Err(nix::errno::Errno::last());
  }
  // SAFETY: `copy` is a new fd that nothing else owns.
  Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

fn errno_error(errno: nix::errno::Errno, what: &str) -> napi::Error {
  napi::Error::from_reason(format!("{what}: {}", errno.desc()))
}
