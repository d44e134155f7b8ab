//! What the Rust side tells one JavaScript environment, queued in order and handed over in batches.
//!
//! Each environment has its own `Sink`; every source holds the sink of the environment that owns
//! it, so an event can only reach its owner. The reactor thread pushes events and, at the end of
//! each batch, wakes the JS thread at most once through a threadsafe function; JavaScript then
//! takes everything queued with `drain`. What the JavaScript thread reads itself (js_loop.rs) goes
//! through the same queue, and its dispatch is called at once with the events as arguments. The
//! function is weak (unref'd), so it never keeps Node alive: JavaScript decides that with its own
//! ref count.
//!
//! Flow control: events that carry received bytes hold a `Credit` against their channel's read
//! budget, returned when JavaScript takes them (or when they are dropped unread), so what is read
//! but not yet delivered stays bounded per channel.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};

use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};

use crate::lock::lock;
use crate::reactor::BatchEnd;

/// User messages as JavaScript decodes them: the frames back to back (text for JSON lines, bytes
/// for V8 payloads) and where each one ends, so JavaScript never searches for boundaries.
pub enum Payload {
  /// Text of ASCII only, whose ends are the same in bytes and in UTF-16 code units: JavaScript
  /// gets it as a one-byte string, with no UTF-8 to decode.
  Ascii(Vec<u8>, Vec<u32>),
  /// Ends in UTF-16 code units, as JavaScript indexes strings.
  Text(String, Vec<u32>),
  /// Ends in bytes. JavaScript gets it as a latin1 string (one character a byte) unless large.
  Binary(Vec<u8>, Vec<u32>),
}

/// A channel's read budget, charged by bytes read and refunded as JavaScript takes them.
pub trait Budget: Send + Sync {
  fn refund(&self, bytes: usize);
}

/// Bytes an event holds against its channel's budget; refunded when the event is taken or dropped.
pub struct Credit {
  bytes: usize,
  budget: Weak<dyn Budget>,
}

impl Credit {
  pub fn new(bytes: usize, budget: Weak<dyn Budget>) -> Credit {
    Credit { bytes, budget }
  }
}

impl Drop for Credit {
  fn drop(&mut self) {
    if let Some(budget) = self.budget.upgrade() {
      budget.refund(self.bytes);
    }
  }
}

pub enum Event {
  /// User messages, in wire order.
  Messages {
    id: u32,
    payload: Payload,
    credit: Credit,
  },
  /// A `NODE_HANDLE` frame and the fd that came with it (already ACKed, or NACKed when `None`).
  Handle {
    id: u32,
    frame: Payload,
    fd: Option<OwnedFd>,
    credit: Credit,
  },
  /// Chunks written by `write`/`write_handle` so far, counted from the channel's start.
  Written {
    id: u32,
    completed: u64,
  },
  /// The peer acknowledged the handle we sent last.
  HandleAcked {
    id: u32,
  },
  /// A handle we sent was refused on every try.
  HandleLost {
    id: u32,
  },
  /// The peer closed the channel (EOF or a broken socket).
  Disconnect {
    id: u32,
  },
  /// The channel carried something it cannot recover from; it is closed after this.
  Error {
    id: u32,
    message: String,
  },
  /// The peer announced or sent a frame over the channel's size limit; it is closed after this.
  /// Node has no limit (it waits for the rest), so this is reported more gently than `Error`.
  Oversized {
    id: u32,
    message: String,
  },
  Exit {
    id: u32,
    code: Option<i32>,
    signal: Option<i32>,
  },
  /// A cluster event for the worker on channel `id`, as JSON (`{"act":"online"}`, …).
  Cluster {
    id: u32,
    json: String,
  },
}

pub type Notify = ThreadsafeFunction<(), (), (), napi::Status, false, true>;

pub struct Sink {
  queue: Mutex<Queue>,
  notified: AtomicBool,
}

struct Queue {
  events: Vec<Event>,
  /// `None` once the environment is gone (and in unit tests, which take events themselves).
  notify: Option<Notify>,
  closed: bool,
}

impl Sink {
  pub fn new(notify: Option<Notify>) -> Sink {
    Sink { queue: Mutex::new(Queue { events: Vec::new(), notify, closed: false }), notified: AtomicBool::new(false) }
  }

  /// Queues `event`; once the environment is gone it is dropped, closing any fd it carries.
  pub fn push(&self, event: Event) {
    let mut queue = lock(&self.queue);
    if queue.closed {
      drop(queue);
      // Outside the lock: dropping refunds credit, which takes the channel's flow lock.
      drop(event);
    } else {
      queue.events.push(event);
    }
  }

  /// Wakes JavaScript if events are queued and no wake-up is already on its way.
  pub fn wake(&self) {
    let queue = lock(&self.queue);
    if queue.events.is_empty() || self.notified.swap(true, Ordering::AcqRel) {
      return;
    }
    if let Some(notify) = &queue.notify {
      notify.call((), ThreadsafeFunctionCallMode::NonBlocking);
    }
  }

  /// Events are waiting for JavaScript.
  pub fn pending(&self) -> bool {
    !lock(&self.queue).events.is_empty()
  }

  pub fn take(&self) -> Vec<Event> {
    let mut queue = lock(&self.queue);
    self.notified.store(false, Ordering::Release);
    std::mem::take(&mut queue.events)
  }

  /// The environment is exiting: nothing more is queued, and what is queued is dropped.
  pub fn close(&self) {
    let (events, notify) = {
      let mut queue = lock(&self.queue);
      queue.closed = true;
      (std::mem::take(&mut queue.events), queue.notify.take())
    };
    // Outside the lock: dropping events refunds credit, which may take channel locks.
    drop(events);
    drop(notify);
  }
}

impl BatchEnd for Sink {
  fn batch_end(&self) {
    self.wake();
  }
}

/// User messages framed since the last hand-over to JavaScript.
#[derive(Default)]
pub struct Batch {
  bytes: Vec<u8>,
  ends: Vec<usize>,
}

impl Batch {
  pub fn push(&mut self, frame: &[u8]) {
    self.bytes.extend_from_slice(frame);
    self.ends.push(self.bytes.len());
  }

  pub fn len(&self) -> usize {
    self.bytes.len()
  }

  pub fn is_empty(&self) -> bool {
    self.ends.is_empty()
  }

  /// The frames as JavaScript takes them: text for JSON (invalid UTF-8 becomes U+FFFD, as Node's
  /// StringDecoder does, each frame on its own since a newline ends any broken sequence).
  pub fn take(&mut self, text: bool) -> Payload {
    let bytes = std::mem::take(&mut self.bytes);
    let ends = std::mem::take(&mut self.ends);
    if !text {
      return Payload::Binary(bytes, ends.into_iter().map(|end| end as u32).collect());
    }
    if bytes.is_ascii() {
      return Payload::Ascii(bytes, ends.into_iter().map(|end| end as u32).collect());
    }
    match String::from_utf8(bytes) {
      Ok(text) => {
        let units = utf16_ends(text.as_bytes(), &ends);
        Payload::Text(text, units)
      }
      Err(invalid) => {
        let bytes = invalid.into_bytes();
        let mut text = String::with_capacity(bytes.len());
        let mut valid_ends = Vec::with_capacity(ends.len());
        let mut start = 0;
        for end in ends {
          text.push_str(&String::from_utf8_lossy(&bytes[start..end]));
          valid_ends.push(text.len());
          start = end;
        }
        let units = utf16_ends(text.as_bytes(), &valid_ends);
        Payload::Text(text, units)
      }
    }
  }
}

/// Byte offsets in valid UTF-8 as UTF-16 offsets: one unit per character, two for those of four
/// bytes (each lead byte counts, continuation bytes do not).
fn utf16_ends(text: &[u8], ends: &[usize]) -> Vec<u32> {
  let mut units = 0u32;
  let mut start = 0;
  ends
    .iter()
    .map(|&end| {
      units += text[start..end].iter().map(|&b| u32::from((b as i8) >= -0x40) + u32::from(b >= 0xf0)).sum::<u32>();
      start = end;
      units
    })
    .collect()
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::sync::atomic::AtomicUsize;
  use std::sync::Arc;

  fn text(payload: Payload) -> (String, Vec<u32>) {
    match payload {
      Payload::Ascii(bytes, ends) => (String::from_utf8(bytes).unwrap(), ends),
      Payload::Text(text, ends) => (text, ends),
      Payload::Binary(..) => panic!("binary"),
    }
  }

  #[test]
  fn ascii_text_goes_as_bytes_and_anything_else_as_utf8_text() {
    let mut batch = Batch::default();
    batch.push(b"{\"a\":1}");
    batch.push(b"2");
    assert!(matches!(batch.take(true), Payload::Ascii(bytes, ends) if bytes == b"{\"a\":1}2" && ends == [7, 8]));
    batch.push("\"é\"".as_bytes());
    assert!(matches!(batch.take(true), Payload::Text(text, ends) if text == "\"é\"" && ends == [3]));
  }

  #[test]
  fn frame_ends_are_utf16_offsets_that_slice_the_text_as_javascript_would() {
    let frames = ["\"a\"", "\"日本\"", "\"😀x\"", "1"];
    let mut batch = Batch::default();
    frames.iter().for_each(|f| batch.push(f.as_bytes()));
    let (joined, ends) = text(batch.take(true));
    let utf16: Vec<u16> = joined.encode_utf16().collect();
    let mut start = 0;
    for (frame, end) in frames.iter().zip(ends) {
      assert_eq!(String::from_utf16(&utf16[start..end as usize]).unwrap(), *frame);
      start = end as usize;
    }
    assert!(batch.is_empty());
  }

  #[test]
  fn invalid_utf8_is_replaced_per_frame() {
    let mut batch = Batch::default();
    batch.push(b"\"a\xff\"");
    batch.push(b"\"\xe6\x97\"");
    batch.push(b"2");
    let (joined, ends) = text(batch.take(true));
    assert_eq!(joined, "\"a\u{fffd}\"\"\u{fffd}\"2");
    assert_eq!(ends, [4, 7, 8]);
  }

  #[derive(Default)]
  struct Counter(AtomicUsize);

  impl Budget for Counter {
    fn refund(&self, bytes: usize) {
      self.0.fetch_add(bytes, Ordering::Relaxed);
    }
  }

  #[test]
  fn credit_comes_back_when_an_event_is_taken_or_dropped_by_a_closed_sink() {
    let budget = Arc::new(Counter::default());
    let weak = Arc::downgrade(&budget) as Weak<dyn Budget>;
    let sink = Sink::new(None);
    let message = |bytes| Event::Messages {
      id: 1,
      payload: Payload::Binary(Vec::new(), Vec::new()),
      credit: Credit::new(bytes, weak.clone()),
    };
    sink.push(message(10));
    drop(sink.take());
    assert_eq!(budget.0.load(Ordering::Relaxed), 10);
    sink.push(message(5));
    sink.close();
    assert_eq!(budget.0.load(Ordering::Relaxed), 15);
    sink.push(message(1));
    assert_eq!(budget.0.load(Ordering::Relaxed), 16, "a closed sink refunds at once");
    assert!(sink.take().is_empty());
  }

  #[test]
  fn a_closed_sink_closes_the_fd_of_an_event_nobody_will_take() {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let sink = Sink::new(None);
    sink.close();
    let (fd, peer) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).unwrap();
    let credit = Credit::new(0, Weak::<Counter>::new() as Weak<dyn Budget>);
    let frame = Payload::Binary(Vec::new(), Vec::new());
    sink.push(Event::Handle { id: 1, frame, fd: Some(fd), credit });
    assert_eq!(nix::unistd::read(&peer, &mut [0u8; 1]), Ok(0), "the other end was closed");
  }
}
