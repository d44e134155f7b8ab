//! What the Rust side tells JavaScript, queued in order and handed over in batches.
//!
//! The reactor thread pushes events and wakes the JS thread at most once per batch through a
//! threadsafe function; JavaScript then takes everything queued with `drain`. The function is
//! weak (unref'd), so it never keeps Node alive: JavaScript decides that with its own ref count.

use crate::lock::lock;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use once_cell::sync::OnceCell;

/// Frames as JavaScript decodes them: text for JSON lines, bytes for V8 payloads.
pub enum Payload {
  Text(String),
  Binary(Vec<u8>),
}

impl Payload {
  /// Invalid UTF-8 becomes U+FFFD, as Node's StringDecoder does.
  pub fn new(json: bool, bytes: Vec<u8>) -> Payload {
    if !json {
      return Payload::Binary(bytes);
    }
    Payload::Text(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
  }
}

pub enum Event {
  /// User messages, in wire order: JSON text lines each ending in `\n`, or length-prefixed V8 frames.
  Messages { id: u32, payload: Payload },
  /// A `NODE_HANDLE` frame and the fd that came with it (already ACKed, or NACKed when `None`).
  Handle { id: u32, payload: Payload, fd: Option<OwnedFd> },
  /// Chunks written by `write`/`write_handle` so far, counted from the channel's start.
  Written { id: u32, completed: u64 },
  /// The child acknowledged the handle we sent last.
  HandleAcked { id: u32 },
  /// A handle we sent was refused on every try.
  HandleLost { id: u32 },
  /// The peer closed the channel (EOF or a broken socket).
  Disconnect { id: u32 },
  /// The channel carried something it cannot recover from; it is closed after this.
  Error { id: u32, message: String },
  Exit { id: u32, code: Option<i32>, signal: Option<i32> },
  /// A cluster event for the worker on channel `id`, as JSON (`{"act":"online"}`, …).
  Cluster { id: u32, json: String },
}

type Notify = ThreadsafeFunction<(), (), (), napi::Status, false, true>;

static QUEUE: Mutex<Vec<Event>> = Mutex::new(Vec::new());
static NOTIFIED: AtomicBool = AtomicBool::new(false);
static NOTIFY: OnceCell<Notify> = OnceCell::new();

pub fn set_notify(notify: Notify) {
  // A second `init` (another copy of the addon's JS) keeps the first function.
  let _ = NOTIFY.set(notify);
}

pub fn push(event: Event) {
  lock(&QUEUE).push(event);
}

/// Wakes JavaScript if events are queued and no wake-up is already on its way.
pub fn wake() {
  if lock(&QUEUE).is_empty() || NOTIFIED.swap(true, Ordering::AcqRel) {
    return;
  }
  if let Some(notify) = NOTIFY.get() {
    notify.call((), ThreadsafeFunctionCallMode::NonBlocking);
  }
}

pub fn take() -> Vec<Event> {
  let mut queue = lock(&QUEUE);
  NOTIFIED.store(false, Ordering::Release);
  std::mem::take(&mut *queue)
}
