//! A Node IPC channel at our end: reads and frames on whichever thread serves its environment's
//! channel set (the JavaScript thread's loop or the reactor, see js_loop.rs), writes from
//! whichever thread has data, and runs the handle (fd) discipline without JavaScript.
//!
//! Writes go out at once when nothing is queued; the rest waits for EPOLLOUT. A frame that carries
//! an fd may have to be resent after the peer's `NODE_HANDLE_NACK`, so by default it blocks
//! everything after it until the ACK/NACK, as Node does. Our own ACK/NACK replies overtake that
//! queue but never split a frame. A handle received from the peer is ACKed here, before
//! JavaScript sees it.
//!
//! Pipelining: a receiver NACKs only when one of its reads ends inside a handle frame, so that the
//! fd arrives before the rest of its frame and a later fd could overwrite it. Node's receiver reads
//! 64 KiB at a time and a read never runs past an fd-carrying write, so while everything the peer
//! may not yet have read (since the last reply) fits in `PIPELINE_WINDOW` and each frame is one
//! atomic write, no read can end inside a frame: such "safe" handles are sent back to back, up to
//! `PIPELINE_DEPTH`, with plain messages between them. Anything else waits as in Node, and a NACK
//! for a safe handle (a peer that reads differently) turns pipelining off for the channel.
//!
//! Flow control, as a libuv stream has it: what is read but not yet taken by JavaScript is charged
//! to the channel's `READ_BUDGET`; past it the channel stops reading (drops EPOLLIN), so the
//! peer's writes fill the kernel buffer and its `send()` returns false, as with Node's parent. It
//! reads again once JavaScript has taken half of it.
//!
//! Internal messages other than handles (`NODE_CLUSTER` on a worker's channel) go to the channel's
//! `Control`, injected by whoever opens it, so this module knows nothing of the cluster protocol.
//!
//! Locks, outermost first: `reader`, then the control's own state, then `writer`; `flow` and the
//! registration's interest lock are taken last and never held while taking another.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, shutdown, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown};
use serde_json::Value;

use crate::events::{Batch, Budget, Credit, Event, Sink};
use crate::framing::{self, Decoder, Internal, Mode};
use crate::lock::lock;
use crate::reactor::{Interest, Reactor, Readiness, Registration, Source};

/// Node reads 64 KiB at a time; bigger reads mean fewer syscalls for bulk traffic.
const READ_SIZE: usize = 256 << 10;
/// Reads per readiness event, so one busy channel cannot starve the others.
const READS_PER_WAKE: usize = 32;
/// Reads after the peer died: whatever it left in the socket, which its death bounds.
const READS_AT_EXIT: usize = 256;
/// Bytes read but not yet taken by JavaScript before the channel stops reading: enough for a
/// few wake-ups' worth of reads at full speed, small next to what a blocked parent must not grow
/// (Node's own parent grows ~10 MB under a flooding child).
pub const READ_BUDGET: usize = 4 << 20;
/// What a received handle costs against the budget beyond its frame, so a peer cannot park more
/// than a few dozen fds on a parent whose JavaScript is busy.
const HANDLE_COST: usize = 64 << 10;
/// Node sends a handle once and retransmits it up to three times after a NACK.
const HANDLE_TRIES: u8 = 4;
/// Bytes the peer may have unread when a pipelined handle frame ends: half of Node's 64 KiB read.
const PIPELINE_WINDOW: u64 = 32 << 10;
/// A frame this small is a single skb, written whole or not at all.
const ATOMIC_FRAME: usize = 16 << 10;
/// Handles awaiting replies at once.
const PIPELINE_DEPTH: usize = 16;

/// Where a channel's internal messages go (the cluster protocol, on a worker's channel).
pub trait Control: Send + Sync {
  /// A `NODE_CLUSTER` message arrived on `channel`.
  fn message(&self, channel: &Channel, message: Value);
  /// `channel` closed, at either end.
  fn closed(&self, channel: &Channel);
}

pub struct Channel {
  pub id: u32,
  pub mode: Mode,
  io: Registration,
  sink: Arc<Sink>,
  /// False for a child's writer beside Node's own end, which does all the reading.
  reads: bool,
  control: Option<Arc<dyn Control>>,
  this: Weak<Channel>,
  ended: AtomicBool,
  reader: Mutex<Reader>,
  writer: Mutex<Writer>,
  flow: Mutex<Flow>,
  traffic: Traffic,
}

/// What went through a channel, each way, since it opened.
#[derive(Default)]
struct Traffic {
  frames_in: AtomicU64,
  bytes_in: AtomicU64,
  frames_out: AtomicU64,
  bytes_out: AtomicU64,
}

/// A snapshot of `Traffic`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
  pub frames_in: u64,
  pub bytes_in: u64,
  pub frames_out: u64,
  pub bytes_out: u64,
}

struct Reader {
  decoder: Decoder,
  /// The fd received ahead of the `NODE_HANDLE` frame it belongs to. As in Node there is at most
  /// one: a peer waits for our ACK before sending another, so a newer fd replaces (closes) a
  /// stray one instead of shifting every later handle by one.
  pending_fd: Option<OwnedFd>,
  batch: Batch,
  /// Room for the kernel's limit (SCM_MAX_FD): a truncated control message would leave fds
  /// installed in our table that nix cannot hand back to us to close. Kept: zeroing ~1 KB per
  /// read showed in the read path's profile.
  control: Vec<u8>,
}

#[derive(Default)]
struct Flow {
  /// Bytes handed to the sink and not yet taken by JavaScript.
  undelivered: usize,
  paused: bool,
}

struct Chunk {
  bytes: Vec<u8>,
  fd: Option<Arc<OwnedFd>>,
  /// Written on JavaScript's behalf: counts towards `Written`.
  counted: bool,
  /// An ACK/NACK reply: not held back by a handle in flight.
  control: bool,
  /// For a handle frame: sends so far, and whether JavaScript asked for it.
  tries: u8,
  from_js: bool,
}

impl Chunk {
  fn new(bytes: Vec<u8>, fd: Option<Arc<OwnedFd>>, counted: bool) -> Chunk {
    Chunk { bytes, fd, counted, control: false, tries: 0, from_js: counted }
  }
}

struct InFlight {
  frame: Vec<u8>,
  fd: Arc<OwnedFd>,
  tries: u8,
  from_js: bool,
  /// `Writer::written` once the frame was out: the peer has read this far when it replies.
  end: u64,
  /// Sent inside the pipeline window, so no NACK (and no resend) can come for it.
  safe: bool,
}

struct Writer {
  queue: VecDeque<Chunk>,
  /// Bytes of the front chunk already written.
  offset: usize,
  queued: usize,
  /// Handle frames awaiting the peer's ACK/NACK, oldest first (replies come in order).
  awaiting: VecDeque<InFlight>,
  /// Bytes written since the channel opened, and how far the peer has surely read.
  written: u64,
  replied_through: u64,
  completed: u64,
  reported: u64,
  /// Off once a safe handle was NACKed: the peer does not read as Node does.
  pipelining: bool,
  closed: bool,
}

impl Default for Writer {
  fn default() -> Writer {
    Writer {
      queue: VecDeque::new(),
      offset: 0,
      queued: 0,
      awaiting: VecDeque::new(),
      written: 0,
      replied_through: 0,
      completed: 0,
      reported: 0,
      pipelining: true,
      closed: false,
    }
  }
}

/// How a channel is opened.
pub struct Options {
  pub id: u32,
  pub mode: Mode,
  /// Largest incoming frame.
  pub limit: usize,
  pub sink: Arc<Sink>,
  pub control: Option<Arc<dyn Control>>,
}

impl Channel {
  /// A full channel on a connected stream socket.
  pub fn open(reactor: &Arc<Reactor>, fd: OwnedFd, options: Options) -> Result<Arc<Channel>, Errno> {
    Channel::register(reactor, fd, options, true)
  }

  /// A write-only channel on a duplicate of a socket that Node reads: a child's batched sends.
  pub fn open_writer(reactor: &Arc<Reactor>, fd: OwnedFd, options: Options) -> Result<Arc<Channel>, Errno> {
    Channel::register(reactor, fd, options, false)
  }

  fn register(reactor: &Arc<Reactor>, fd: OwnedFd, options: Options, reads: bool) -> Result<Arc<Channel>, Errno> {
    let Options { id, mode, limit, sink, control } = options;
    let interest = if reads { Interest::READ } else { Interest::NONE };
    reactor.register(Arc::new(fd), interest, |io, this| Channel {
      id,
      mode,
      io,
      sink,
      reads,
      control,
      this: this.clone(),
      ended: AtomicBool::new(false),
      reader: Mutex::new(Reader {
        decoder: Decoder::new(mode, limit),
        pending_fd: None,
        batch: Batch::default(),
        control: nix::cmsg_space!([RawFd; 253]),
      }),
      writer: Mutex::new(Writer::default()),
      flow: Mutex::default(),
      traffic: Traffic::default(),
    })
  }

  pub fn raw_fd(&self) -> RawFd {
    self.io.fd()
  }

  /// Writes `frames` frames (and maybe an fd) from JavaScript, queueing what the socket does not
  /// take now; returns the bytes still queued. Borrowed bytes are copied only if queued.
  pub fn write(&self, bytes: Cow<[u8]>, fd: Option<Arc<OwnedFd>>, frames: u64) -> Result<usize, Errno> {
    self.count_out(frames, bytes.len());
    self.with_writer(|writer, raw| match fd {
      Some(fd) => writer.push(Chunk::new(bytes.into_owned(), Some(fd), true)),
      None => writer.write_or_queue(raw, bytes),
    })
  }

  /// Sends an internal message built on the Rust side (cluster replies, `newconn`).
  pub fn send_value(&self, value: &Value, fd: Option<Arc<OwnedFd>>) -> Result<usize, Errno> {
    let bytes = framing::encode_frame(self.mode, value);
    self.count_out(1, bytes.len());
    self.enqueue(Chunk::new(bytes, fd, false))
  }

  fn count_out(&self, frames: u64, bytes: usize) {
    self.traffic.frames_out.fetch_add(frames, Ordering::Relaxed);
    self.traffic.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
  }

  /// Frames and bytes each way since the channel opened (out: as handed to the channel).
  pub fn traffic(&self) -> TrafficStats {
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let t = &self.traffic;
    TrafficStats {
      frames_in: get(&t.frames_in),
      bytes_in: get(&t.bytes_in),
      frames_out: get(&t.frames_out),
      bytes_out: get(&t.bytes_out),
    }
  }

  /// Closes the channel at our end: one last attempt to write what is queued, then EOF for the
  /// peer. Returns how many of JavaScript's chunks were written in full.
  pub fn close(&self) -> u64 {
    let mut writer = lock(&self.writer);
    if !self.ended.swap(true, Ordering::AcqRel) {
      let _ = writer.flush(self.raw_fd());
      writer.close();
      drop(writer);
      self.detach();
      writer = lock(&self.writer);
    }
    writer.completed
  }

  /// Reports `message` and closes the channel: it cannot be trusted any more.
  pub fn fail(&self, message: String) {
    self.fail_with(Event::Error { id: self.id, message });
  }

  fn fail_with(&self, failure: Event) {
    if !self.ended.load(Ordering::Acquire) {
      self.sink.push(failure);
      self.end_by_peer();
    }
  }

  /// Reads whatever the peer left in the socket, budget or not: a child's last messages, before
  /// its exit is reported (its death bounds them).
  pub fn read_remaining(&self) {
    if self.reads && !self.ended.load(Ordering::Acquire) {
      self.read(READS_AT_EXIT, false);
    }
  }

  fn enqueue(&self, chunk: Chunk) -> Result<usize, Errno> {
    self.with_writer(|writer, _| writer.push(chunk))
  }

  /// Hands an open writer (and the socket) to `add`, then flushes; returns the bytes still queued.
  fn with_writer(&self, add: impl FnOnce(&mut Writer, RawFd)) -> Result<usize, Errno> {
    let mut writer = lock(&self.writer);
    if writer.closed {
      return Err(Errno::EPIPE);
    }
    add(&mut writer, self.raw_fd());
    self.flush_locked(&mut writer);
    Ok(writer.queued)
  }

  fn send_control(&self, value: &Value) {
    let bytes = framing::encode_frame(self.mode, value);
    let mut writer = lock(&self.writer);
    if !writer.closed {
      writer.push_early(Chunk { control: true, ..Chunk::new(bytes, None, false) });
      self.flush_locked(&mut writer);
    }
  }

  /// Flushes from the reactor, where JavaScript learns of progress only through `Written`.
  fn flush_and_report(&self, writer: &mut Writer) {
    self.flush_locked(writer);
    if writer.completed != writer.reported {
      writer.reported = writer.completed;
      self.sink.push(Event::Written { id: self.id, completed: writer.completed });
    }
  }

  /// Writes what it can and keeps EPOLLOUT wanted exactly while there is writable work waiting.
  fn flush_locked(&self, writer: &mut Writer) {
    if writer.flush(self.raw_fd()).is_err() {
      // The peer is gone; reading will see EOF and report the disconnect.
      writer.close();
    }
    self.io.set_write(writer.writable_work());
  }

  fn read(&self, reads: usize, bounded: bool) {
    let mut guard = lock(&self.reader);
    let reader = &mut *guard;
    let mut ended = false;
    let mut over_budget = false;
    for _ in 0..reads {
      if bounded && lock(&self.flow).undelivered + reader.batch.len() >= READ_BUDGET {
        over_budget = true;
        break;
      }
      let room = reader.decoder.spare(READ_SIZE);
      let wanted = room.len();
      let mut iov = [IoSliceMut::new(room)];
      let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
      let (n, fds) = match recvmsg::<()>(self.raw_fd(), &mut iov, Some(&mut reader.control), flags) {
        Ok(msg) => {
          let mut fds = Vec::new();
          for cmsg in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
              // SAFETY: the kernel just installed these fds in our table; nothing else owns them.
              fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
          }
          (msg.bytes, fds)
        }
        Err(Errno::EAGAIN) => break,
        Err(Errno::EINTR) => continue,
        Err(_) => {
          ended = true;
          break;
        }
      };
      if let Some(fd) = fds.into_iter().next() {
        reader.pending_fd = Some(fd);
      }
      if n == 0 {
        ended = true;
        break;
      }
      reader.decoder.filled(n);
      self.traffic.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
      if let Err(failure) = self.frames(reader) {
        self.hand_over(&mut reader.batch);
        drop(guard);
        return self.fail_with(failure);
      }
      // A short read emptied the socket (as libuv assumes): epoll is level-triggered, so more
      // data reports itself, and the EAGAIN read is saved.
      if bounded && n < wanted {
        break;
      }
    }
    self.hand_over(&mut reader.batch);
    drop(guard);
    if ended {
      self.end_by_peer();
    } else if over_budget {
      self.pause_if_over_budget();
    }
  }

  /// Acts on every complete frame; an error is the event that ends the channel.
  fn frames(&self, reader: &mut Reader) -> Result<(), Event> {
    let Reader { decoder, pending_fd, batch, .. } = reader;
    let oversized = |e: framing::FrameError| Event::Oversized { id: self.id, message: e.to_string() };
    while let Some(frame) = decoder.next_frame().map_err(oversized)? {
      self.traffic.frames_in.fetch_add(1, Ordering::Relaxed);
      match framing::classify(self.mode, frame) {
        Some(Internal::HandleAck) => self.on_handle_reply(true),
        Some(Internal::HandleNack) => self.on_handle_reply(false),
        Some(Internal::Handle) => {
          let fd = pending_fd.take();
          self.send_control(&framing::handle_reply(fd.is_some()));
          self.hand_over(batch);
          let mut single = Batch::default();
          single.push(frame);
          let credit = self.charge(frame.len() + HANDLE_COST);
          self.sink.push(Event::Handle { id: self.id, frame: single.take(self.mode == Mode::Json), fd, credit });
        }
        Some(Internal::Cluster) if self.control.is_some() => {
          self.hand_over(batch);
          let malformed = || Event::Error { id: self.id, message: "malformed NODE_CLUSTER message".into() };
          let message = framing::decode_value(self.mode, frame).ok_or_else(malformed)?;
          if let Some(control) = &self.control {
            control.message(self, message);
          }
        }
        _ => batch.push(frame),
      }
    }
    Ok(())
  }

  fn hand_over(&self, batch: &mut Batch) {
    if !batch.is_empty() {
      let credit = self.charge(batch.len());
      self.sink.push(Event::Messages { id: self.id, payload: batch.take(self.mode == Mode::Json), credit });
    }
  }

  /// Charged before the event is queued, so JavaScript can never refund what was not yet charged.
  fn charge(&self, bytes: usize) -> Credit {
    lock(&self.flow).undelivered += bytes;
    Credit::new(bytes, self.this.clone() as Weak<dyn Budget>)
  }

  fn pause_if_over_budget(&self) {
    let mut flow = lock(&self.flow);
    if flow.undelivered >= READ_BUDGET && !flow.paused {
      flow.paused = true;
      self.io.set_read(false);
    }
  }

  fn on_handle_reply(&self, acked: bool) {
    let mut writer = lock(&self.writer);
    match writer.on_reply(acked) {
      // A reply with nothing in flight is the peer's confusion, not ours to crash on.
      Reply::Unsolicited => return,
      Reply::Acked { from_js: true } => self.sink.push(Event::HandleAcked { id: self.id }),
      Reply::Lost { from_js: true } => self.sink.push(Event::HandleLost { id: self.id }),
      Reply::Acked { .. } | Reply::Lost { .. } | Reply::Resent => {}
    }
    self.flush_and_report(&mut writer);
  }

  fn end_by_peer(&self) {
    if self.ended.swap(true, Ordering::AcqRel) {
      return;
    }
    lock(&self.writer).close();
    self.detach();
    self.sink.push(Event::Disconnect { id: self.id });
  }

  fn detach(&self) {
    self.io.deregister();
    // A writer's socket is Node's too: closing our duplicate is all it takes, and Node's close
    // of its own fd then ends the channel.
    if self.reads {
      let _ = shutdown(self.raw_fd(), Shutdown::Both);
    }
    if let Some(control) = &self.control {
      control.closed(self);
    }
  }
}

impl Source for Channel {
  fn ready(&self, readiness: Readiness) {
    if readiness.writable() {
      self.flush_and_report(&mut lock(&self.writer));
    }
    if !self.reads {
      if readiness.hung_up() {
        self.end_by_peer();
      }
    } else if readiness.readable() {
      self.read(READS_PER_WAKE, true);
    }
  }

  fn failed(&self, reason: String) {
    self.fail(reason);
  }
}

impl Budget for Channel {
  fn refund(&self, bytes: usize) {
    let mut flow = lock(&self.flow);
    flow.undelivered = flow.undelivered.saturating_sub(bytes);
    if flow.paused && flow.undelivered <= READ_BUDGET / 2 {
      flow.paused = false;
      self.io.set_read(true);
    }
  }
}

/// What a peer's ACK or NACK did to the handle in flight.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
  Unsolicited,
  Acked {
    from_js: bool,
  },
  /// NACKed: queued again, fd and all, ahead of everything not yet started.
  Resent,
  /// NACKed on the last try.
  Lost {
    from_js: bool,
  },
}

impl Writer {
  fn on_reply(&mut self, acked: bool) -> Reply {
    let Some(inflight) = self.awaiting.pop_front() else {
      return Reply::Unsolicited;
    };
    let InFlight { frame, fd, tries, from_js, end, safe } = inflight;
    self.replied_through = end;
    if !acked && safe {
      self.pipelining = false;
    }
    if acked {
      Reply::Acked { from_js }
    } else if tries >= HANDLE_TRIES {
      Reply::Lost { from_js }
    } else {
      self.push_early(Chunk { tries, from_js, ..Chunk::new(frame, Some(fd), false) });
      Reply::Resent
    }
  }

  fn push(&mut self, chunk: Chunk) {
    self.queued += chunk.bytes.len();
    self.queue.push_back(chunk);
  }

  /// Replies and retransmissions go before everything not yet started (after earlier replies),
  /// never into the middle of a partly written frame.
  fn push_early(&mut self, chunk: Chunk) {
    let first = usize::from(self.offset > 0);
    let at = (first..self.queue.len()).find(|&i| !self.queue[i].control).unwrap_or(self.queue.len());
    self.queued += chunk.bytes.len();
    self.queue.insert(at, chunk);
  }

  /// JavaScript's frames without an fd: sent straight from the caller's bytes when nothing waits
  /// to go before them, and what the socket does not take queued (a copy only then). A write
  /// error stops the attempt; the flush that follows meets it again and closes.
  fn write_or_queue(&mut self, fd: RawFd, bytes: Cow<[u8]>) {
    let mut sent = 0;
    if self.queue.is_empty() && !self.awaiting.iter().any(|h| !h.safe) {
      while sent < bytes.len() {
        match send(fd, &bytes[sent..], None) {
          Ok(n) => sent += n,
          Err(Errno::EINTR) => {}
          Err(_) => break,
        }
      }
      self.written += sent as u64;
    }
    if sent == bytes.len() {
      self.completed += 1;
      return;
    }
    let rest = match bytes {
      Cow::Owned(mut owned) => {
        owned.drain(..sent);
        owned
      }
      Cow::Borrowed(borrowed) => borrowed[sent..].to_vec(),
    };
    self.push(Chunk::new(rest, None, true));
  }

  fn writable_work(&self) -> bool {
    self.queue.front().is_some_and(|front| self.may_write(front))
  }

  /// Whether `front` may go out now (see the module comment on pipelining).
  fn may_write(&self, front: &Chunk) -> bool {
    if front.control || self.offset > 0 {
      return true;
    }
    if self.awaiting.iter().any(|h| !h.safe) {
      return false;
    }
    front.fd.is_none() || self.awaiting.is_empty() || (self.awaiting.len() < PIPELINE_DEPTH && self.is_safe(front))
  }

  fn is_safe(&self, chunk: &Chunk) -> bool {
    self.pipelining
      && chunk.bytes.len() <= ATOMIC_FRAME
      && self.written + chunk.bytes.len() as u64 - self.replied_through <= PIPELINE_WINDOW
  }

  fn flush(&mut self, fd: RawFd) -> Result<(), Errno> {
    while let Some(front) = self.queue.front() {
      if !self.may_write(front) {
        return Ok(());
      }
      let safe = front.fd.is_some() && self.offset == 0 && self.is_safe(front);
      let attach = if self.offset == 0 { front.fd.as_ref().map(|fd| fd.as_raw_fd()) } else { None };
      match send(fd, &front.bytes[self.offset..], attach) {
        Ok(n) => {
          self.offset += n;
          self.queued -= n;
          self.written += n as u64;
          if self.offset == front.bytes.len() {
            self.offset = 0;
            let chunk = self.queue.pop_front().expect("front exists");
            self.completed += u64::from(chunk.counted);
            if let Some(fd) = chunk.fd {
              let (tries, from_js, end) = (chunk.tries + 1, chunk.from_js, self.written);
              self.awaiting.push_back(InFlight { frame: chunk.bytes, fd, tries, from_js, end, safe });
            }
          }
        }
        Err(Errno::EAGAIN | Errno::ENOBUFS) => return Ok(()),
        Err(Errno::EINTR) => {}
        Err(e) => return Err(e),
      }
    }
    Ok(())
  }

  fn close(&mut self) {
    self.closed = true;
    self.queue.clear();
    self.queued = 0;
    self.offset = 0;
    self.awaiting.clear();
  }
}

/// One write; an fd rides on it as a single SCM_RIGHTS message, only on a frame's first bytes.
fn send(fd: RawFd, bytes: &[u8], attach: Option<RawFd>) -> Result<usize, Errno> {
  let flags = MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT;
  let iov = [IoSlice::new(bytes)];
  match attach {
    Some(handle) => sendmsg::<()>(fd, &iov, &[ControlMessage::ScmRights(&[handle])], flags, None),
    // send(2) spares the kernel copying in a msghdr and an iovec: most writes carry no fd.
    None => nix::sys::socket::send(fd, bytes, flags),
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

  fn pair() -> (OwnedFd, OwnedFd) {
    socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK).unwrap()
  }

  /// One read at the peer: the bytes and how many fds came with them.
  fn receive(peer: &OwnedFd) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; 128 << 10];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut control = nix::cmsg_space!([RawFd; 8]);
    let msg = match recvmsg::<()>(peer.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::MSG_CMSG_CLOEXEC) {
      Ok(msg) => msg,
      Err(Errno::EAGAIN) => return (Vec::new(), 0),
      Err(e) => panic!("recvmsg: {e}"),
    };
    let mut fds = 0;
    for cmsg in msg.cmsgs().unwrap() {
      if let ControlMessageOwned::ScmRights(received) = cmsg {
        fds += received.len();
        // SAFETY: the kernel just installed these fds in the test's table; closing them is ours.
        received.into_iter().for_each(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }));
      }
    }
    let n = msg.bytes;
    (buf[..n].to_vec(), fds)
  }

  fn handle(bytes: &[u8]) -> Chunk {
    let (passed, _other) = pair();
    Chunk::new(bytes.to_vec(), Some(Arc::new(passed)), true)
  }

  /// A frame too big to be one atomic write: it could be NACKed, so it gets Node's discipline.
  fn big_frame() -> Vec<u8> {
    let mut frame = vec![b'h'; ATOMIC_FRAME + 1];
    frame.push(b'\n');
    frame
  }

  fn handle_then_plain() -> (Writer, OwnedFd, OwnedFd) {
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    writer.push(handle(&big_frame()));
    writer.push(Chunk::new(b"A\n".to_vec(), None, true));
    writer.flush(ours.as_raw_fd()).unwrap();
    (writer, ours, peer)
  }

  #[test]
  fn a_message_goes_out_from_the_callers_bytes_only_with_nothing_to_wait_for() {
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    writer.write_or_queue(ours.as_raw_fd(), Cow::Borrowed(b"A\n"));
    assert_eq!(receive(&peer), (b"A\n".to_vec(), 0));
    assert_eq!((writer.completed, writer.queued), (1, 0));
    // Behind a handle that may be NACKed, it is the queue's.
    writer.push(handle(&big_frame()));
    writer.flush(ours.as_raw_fd()).unwrap();
    writer.write_or_queue(ours.as_raw_fd(), Cow::Borrowed(b"B\n"));
    assert_eq!((writer.completed, writer.queued), (2, 2));
    // A full socket takes part of it; the rest is the queue's, and follows it in order.
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    let big: Vec<u8> = (0..8 << 20).map(|i: u32| i as u8).collect();
    writer.write_or_queue(ours.as_raw_fd(), Cow::Borrowed(&big));
    let sent = writer.written as usize;
    assert!(sent > 0 && sent < big.len(), "{sent} of {} bytes", big.len());
    assert_eq!((writer.completed, writer.queued), (0, big.len() - sent));
    let mut got = Vec::new();
    while got.len() < big.len() {
      got.extend(receive(&peer).0);
      writer.flush(ours.as_raw_fd()).unwrap();
    }
    assert!(got == big, "the bytes arrive whole and in order");
    assert_eq!(writer.completed, 1);
  }

  #[test]
  fn a_handle_holds_later_messages_until_acked_and_a_nack_resends_it_with_its_fd() {
    let (mut writer, ours, peer) = handle_then_plain();
    assert_eq!(receive(&peer), (big_frame(), 1));
    assert_eq!(writer.completed, 1);
    assert!(!writer.writable_work(), "'A' waits for the reply");

    assert_eq!(writer.on_reply(false), Reply::Resent);
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(receive(&peer), (big_frame(), 1), "resent with the fd, before 'A'");
    assert_eq!(writer.completed, 1, "a resend is not a new chunk for JavaScript");

    assert_eq!(writer.on_reply(true), Reply::Acked { from_js: true });
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(receive(&peer), (b"A\n".to_vec(), 0));
    assert_eq!(writer.completed, 2);
    assert_eq!(writer.on_reply(true), Reply::Unsolicited);
  }

  #[test]
  fn a_handle_nacked_on_every_try_is_lost_and_the_queue_moves_on() {
    let (mut writer, ours, peer) = handle_then_plain();
    for _ in 1..HANDLE_TRIES {
      assert_eq!(receive(&peer).1, 1);
      assert_eq!(writer.on_reply(false), Reply::Resent);
      writer.flush(ours.as_raw_fd()).unwrap();
    }
    assert_eq!(receive(&peer), (big_frame(), 1));
    assert_eq!(writer.on_reply(false), Reply::Lost { from_js: true });
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(receive(&peer), (b"A\n".to_vec(), 0));
  }

  #[test]
  fn small_handles_and_plain_messages_pipeline_inside_the_window() {
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    for _ in 0..3 {
      writer.push(handle(b"H\n"));
      writer.push(Chunk::new(b"A\n".to_vec(), None, true));
    }
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.awaiting.len(), 3, "no reply needed before the next safe handle");
    assert_eq!(writer.completed, 6);
    // A read never runs past a frame that carries an fd, so each read has at most one.
    let mut reads = Vec::new();
    loop {
      match receive(&peer) {
        (bytes, _) if bytes.is_empty() => break,
        read => reads.push(read),
      }
    }
    assert_eq!(reads, [(b"H\n".to_vec(), 1), (b"A\nH\n".to_vec(), 1), (b"A\nH\n".to_vec(), 1), (b"A\n".to_vec(), 0)]);
    for _ in 0..3 {
      assert_eq!(writer.on_reply(true), Reply::Acked { from_js: true });
    }
    assert_eq!(writer.on_reply(true), Reply::Unsolicited);
  }

  #[test]
  fn a_handle_behind_more_than_the_window_waits_for_the_replies_before_it() {
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    writer.push(handle(b"H\n"));
    writer.push(Chunk::new(vec![b'x'; PIPELINE_WINDOW as usize], None, true));
    writer.push(handle(b"J\n"));
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.awaiting.len(), 1, "J would end past the window: it waits");
    assert_eq!(writer.completed, 2, "plain data may follow a safe handle");
    assert!(!writer.writable_work());
    assert_eq!(writer.on_reply(true), Reply::Acked { from_js: true });
    assert!(writer.writable_work());
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.completed, 3);
    assert!(!writer.awaiting[0].safe, "the peer may not have read the plain data yet");
    let mut got = Vec::new();
    while !got.ends_with(b"J\n") {
      got.extend(receive(&peer).0);
    }
  }

  #[test]
  fn an_unsafe_handle_holds_everything_as_in_node() {
    let (ours, _peer) = pair();
    let mut writer = Writer::default();
    writer.push(handle(&big_frame()));
    writer.push(Chunk::new(b"A\n".to_vec(), None, true));
    writer.push(handle(b"H\n"));
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!((writer.completed, writer.awaiting.len()), (1, 1));
    assert!(!writer.writable_work());
  }

  #[test]
  fn our_ack_overtakes_a_held_queue() {
    let (mut writer, ours, peer) = handle_then_plain();
    receive(&peer);
    writer.push_early(Chunk { control: true, ..Chunk::new(b"ACK\n".to_vec(), None, false) });
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(receive(&peer), (b"ACK\n".to_vec(), 0), "sent although 'A' is still held");
    assert!(!writer.writable_work());
  }

  #[test]
  fn a_nack_for_a_pipelined_handle_turns_pipelining_off_and_resends_it_first() {
    let (ours, peer) = pair();
    let mut writer = Writer::default();
    writer.push(handle(b"H\n"));
    writer.push(handle(b"J\n"));
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.awaiting.len(), 2, "both went out pipelined");
    writer.push(handle(b"K\n"));
    assert_eq!(writer.on_reply(false), Reply::Resent);
    assert!(!writer.pipelining);
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.awaiting.len(), 1, "H's resend waits for J's reply, K for H's");
    assert_eq!(writer.queue.front().map(|c| c.bytes.clone()), Some(b"H\n".to_vec()));
    assert_eq!(writer.on_reply(true), Reply::Acked { from_js: true });
    writer.flush(ours.as_raw_fd()).unwrap();
    assert_eq!(writer.awaiting.iter().map(|h| h.frame.clone()).collect::<Vec<_>>(), [b"H\n".to_vec()]);
    assert_eq!(writer.queue.len(), 1, "K waits: one handle at a time from now on");
    drop(peer);
  }

  /// A cluster-like control that records what reaches it.
  #[derive(Default)]
  struct Recorder {
    messages: Mutex<Vec<Value>>,
    closed: AtomicBool,
  }

  impl Control for Recorder {
    fn message(&self, channel: &Channel, message: Value) {
      channel.send_value(&serde_json::json!({ "cmd": "NODE_CLUSTER", "act": "reply" }), None).unwrap();
      lock(&self.messages).push(message);
    }
    fn closed(&self, _: &Channel) {
      self.closed.store(true, Ordering::Release);
    }
  }

  fn open(control: Option<Arc<dyn Control>>) -> (Arc<Reactor>, Arc<Sink>, Arc<Channel>, OwnedFd) {
    let reactor = Arc::new(Reactor::new().unwrap());
    let sink = Arc::new(Sink::new(None));
    let (ours, peer) = pair();
    let options = Options { id: 7, mode: Mode::Json, limit: 1 << 20, sink: sink.clone(), control };
    let channel = Channel::open(&reactor, ours, options).unwrap();
    (reactor, sink, channel, peer)
  }

  fn turn(reactor: &Reactor) -> usize {
    reactor.turn(&mut [nix::sys::epoll::EpollEvent::empty(); 8], Some(50)).unwrap()
  }

  fn write_all(peer: &OwnedFd, mut bytes: &[u8]) -> usize {
    let mut total = 0;
    while !bytes.is_empty() {
      match nix::unistd::write(peer, bytes) {
        Ok(n) => {
          total += n;
          bytes = &bytes[n..];
        }
        Err(Errno::EAGAIN) => break,
        Err(e) => panic!("write: {e}"),
      }
    }
    total
  }

  #[test]
  fn reading_stops_at_the_budget_and_resumes_once_javascript_takes_the_messages() {
    let (reactor, sink, channel, peer) = open(None);
    let line = format!("\"{}\"\n", "x".repeat(1022));
    let mut sent = 0;
    let mut rounds = 0;
    // The peer writes until the kernel pushes back, the channel reading all the while.
    loop {
      let wrote = write_all(&peer, line.repeat(64).as_bytes());
      sent += wrote;
      if turn(&reactor) == 0 && wrote == 0 {
        break;
      }
      rounds += 1;
      assert!(rounds < 10_000, "the peer was never pushed back");
    }
    let undelivered = lock(&channel.flow).undelivered;
    assert!(lock(&channel.flow).paused, "paused at {undelivered} bytes");
    assert!((READ_BUDGET..READ_BUDGET + READ_SIZE + line.len()).contains(&undelivered), "{undelivered} bytes held");
    let taken = sink.take();
    let delivered: usize = taken
      .iter()
      .map(|e| match e {
        Event::Messages { payload: crate::events::Payload::Ascii(_, ends), .. } => ends.len(),
        _ => 0,
      })
      .sum();
    drop(taken);
    assert!(!lock(&channel.flow).paused, "taking the events refunds the budget");
    assert_eq!(lock(&channel.flow).undelivered, 0);
    let mut rest = 0;
    while turn(&reactor) > 0 {
      rest += sink.take().len();
    }
    assert!(rest > 0, "reading resumed");
    assert!(delivered * line.len() < sent);
  }

  #[test]
  fn cluster_messages_go_to_the_injected_control_which_can_answer_at_once() {
    let recorder = Arc::new(Recorder::default());
    let (reactor, sink, channel, peer) = open(Some(recorder.clone()));
    write_all(&peer, b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0}\n\"user\"\n");
    turn(&reactor);
    assert_eq!(lock(&recorder.messages)[0]["act"], "online");
    assert_eq!(receive(&peer).0, b"{\"act\":\"reply\",\"cmd\":\"NODE_CLUSTER\"}\n");
    assert!(matches!(&sink.take()[..], [Event::Messages { .. }]), "the user message goes to JavaScript");
    drop(peer);
    turn(&reactor);
    assert!(recorder.closed.load(Ordering::Acquire), "the control hears of the close");
    assert!(matches!(&sink.take()[..], [Event::Disconnect { id: 7 }]));
    assert_eq!(channel.write(Cow::Borrowed(b"x\n"), None, 1), Err(Errno::EPIPE));
  }

  #[test]
  fn a_received_handle_is_acked_before_javascript_sees_it() {
    let (reactor, sink, _channel, peer) = open(None);
    let (passed, _other) = pair();
    let frame = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":1}\n";
    send(peer.as_raw_fd(), frame, Some(passed.as_raw_fd())).unwrap();
    turn(&reactor);
    assert_eq!(receive(&peer).0, b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n");
    assert!(matches!(&sink.take()[..], [Event::Handle { fd: Some(_), .. }]));
  }
}
