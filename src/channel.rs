//! The parent's end of a Node IPC channel: reads and frames on the reactor thread, writes from
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
//! `PIPELINE_DEPTH`, with plain messages between them. Anything else waits as in Node.

use crate::lock::lock;
use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{recvmsg, sendmsg, shutdown, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown};
use once_cell::sync::Lazy;
use serde_json::{json, Value};

use crate::events::{self, Event, Payload};
use crate::framing::{self, Decoder, Internal, Mode};
use crate::reactor::{self, Kind};
use crate::cluster;

/// Node reads 64 KiB at a time; bigger reads mean fewer syscalls for bulk traffic.
const READ_SIZE: usize = 256 << 10;
/// Reads per readiness event, so one busy channel cannot starve the others.
const READS_PER_WAKE: usize = 32;
/// Node sends a handle once and retransmits it up to three times after a NACK.
const HANDLE_TRIES: u8 = 4;
/// Bytes the peer may have unread when a pipelined handle frame ends: half of Node's 64 KiB read.
const PIPELINE_WINDOW: u64 = 32 << 10;
/// A frame this small is a single skb, written whole or not at all.
const ATOMIC_FRAME: usize = 16 << 10;
/// Handles awaiting replies at once.
const PIPELINE_DEPTH: usize = 16;

static CHANNELS: Lazy<Mutex<HashMap<u32, Arc<Channel>>>> = Lazy::new(Default::default);

pub struct Channel {
  pub id: u32,
  fd: OwnedFd,
  pub mode: Mode,
  /// The cluster worker id when this channel belongs to a cluster worker.
  pub worker: Option<u32>,
  /// False for a child's writer beside Node's own end, which does all the reading.
  reads: bool,
  reader: Mutex<Reader>,
  writer: Mutex<Writer>,
}

struct Reader {
  decoder: Decoder,
  /// The fd received ahead of the `NODE_HANDLE` frame it belongs to. As in Node there is at most
  /// one: a peer waits for our ACK before sending another, so a newer fd replaces (closes) a
  /// stray one instead of shifting every later handle by one.
  pending_fd: Option<OwnedFd>,
  /// User messages framed since the last hand-over to JavaScript.
  batch: Vec<u8>,
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

#[derive(Default)]
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
  armed: bool,
  closed: bool,
}

pub fn open(id: u32, fd: OwnedFd, mode: Mode, limit: usize, worker: Option<u32>) -> Result<(), Errno> {
  install(Channel::new(id, fd, mode, limit, worker, true))
}

/// A write-only channel on a duplicate of a socket that Node reads: a child's batched sends.
pub fn open_writer(id: u32, fd: OwnedFd, mode: Mode) -> Result<(), Errno> {
  install(Channel::new(id, fd, mode, 0, None, false))
}

fn install(channel: Channel) -> Result<(), Errno> {
  let (id, channel) = (channel.id, Arc::new(channel));
  lock(&CHANNELS).insert(id, channel.clone());
  let fd = channel.fd.as_fd();
  let registered = if channel.reads { reactor::register(fd, Kind::Channel, id) } else { reactor::register_output(fd, Kind::Channel, id) };
  registered.inspect_err(|_| {
    lock(&CHANNELS).remove(&id);
  })
}

pub fn get(id: u32) -> Option<Arc<Channel>> {
  lock(&CHANNELS).get(&id).cloned()
}

/// Queues bytes (and maybe an fd) from JavaScript; returns the bytes still queued.
pub fn write(id: u32, bytes: Vec<u8>, fd: Option<Arc<OwnedFd>>) -> Result<usize, Errno> {
  let channel = get(id).ok_or(Errno::EPIPE)?;
  channel.enqueue(Chunk::new(bytes, fd, true))
}

/// Closes the channel at our end: one last attempt to write what is queued, then EOF for the peer.
/// Returns how many of JavaScript's chunks were written in full.
pub fn close(id: u32) -> u64 {
  let Some(channel) = lock(&CHANNELS).remove(&id) else { return 0 };
  let mut writer = lock(&channel.writer);
  let _ = writer.flush(channel.fd.as_raw_fd());
  let completed = writer.completed;
  writer.close();
  drop(writer);
  channel.detach();
  completed
}

/// Reports `message` on channel `id` and closes it: the channel cannot be trusted any more.
pub fn fail(id: u32, message: String) {
  if let Some(channel) = get(id) {
    events::push(Event::Error { id, message });
    channel.end_by_peer();
  }
}

/// Reads whatever channel `id` has buffered: a child's last messages, before its exit is reported.
pub fn read_pending(id: u32) {
  if let Some(channel) = get(id) {
    channel.read();
  }
}

pub fn on_ready(id: u32, flags: EpollFlags) {
  let Some(channel) = get(id) else { return };
  if reactor::writable(flags) {
    channel.flush_and_report();
  }
  if !channel.reads {
    if reactor::hung_up(flags) {
      channel.end_by_peer();
    }
  } else if reactor::readable(flags) {
    channel.read();
  }
}

impl Channel {
  pub fn raw_fd(&self) -> RawFd {
    self.fd.as_raw_fd()
  }

  fn new(id: u32, fd: OwnedFd, mode: Mode, limit: usize, worker: Option<u32>, reads: bool) -> Channel {
    Channel {
      id,
      fd,
      mode,
      worker,
      reads,
      reader: Mutex::new(Reader { decoder: Decoder::new(mode, limit), pending_fd: None, batch: Vec::new() }),
      writer: Mutex::new(Writer::default()),
    }
  }

  /// Sends an internal message built on the Rust side (cluster replies, `newconn`).
  pub fn send_value(&self, value: &Value, fd: Option<Arc<OwnedFd>>) -> Result<usize, Errno> {
    let bytes = framing::encode_frame(self.mode, value);
    self.enqueue(Chunk::new(bytes, fd, false))
  }

  fn enqueue(&self, chunk: Chunk) -> Result<usize, Errno> {
    let mut writer = lock(&self.writer);
    if writer.closed {
      return Err(Errno::EPIPE);
    }
    writer.push(chunk);
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

  fn flush_and_report(&self) {
    self.flush_and_report_locked(&mut lock(&self.writer));
  }

  /// Flushes from the reactor, where JavaScript learns of progress only through `Written`.
  fn flush_and_report_locked(&self, writer: &mut Writer) {
    self.flush_locked(writer);
    if writer.completed != writer.reported {
      writer.reported = writer.completed;
      events::push(Event::Written { id: self.id, completed: writer.completed });
    }
  }

  /// Writes what it can and keeps EPOLLOUT armed exactly while there is writable work waiting.
  fn flush_locked(&self, writer: &mut Writer) {
    if writer.flush(self.fd.as_raw_fd()).is_err() {
      // The peer is gone; reading will see EOF and report the disconnect.
      writer.close();
    }
    let want = writer.writable_work();
    if want != writer.armed && reactor::set_interest(self.fd.as_fd(), Kind::Channel, self.id, self.reads, want).is_ok() {
      writer.armed = want;
    }
  }

  fn read(self: &Arc<Self>) {
    let mut guard = lock(&self.reader);
    let reader = &mut *guard;
    // Room for the kernel's limit (SCM_MAX_FD): a truncated control message would leave fds
    // installed in our table that nix cannot hand back to us to close.
    let mut control = nix::cmsg_space!([RawFd; 253]);
    let mut ended = false;
    for _ in 0..READS_PER_WAKE {
      let room = reader.decoder.spare(READ_SIZE);
      let mut iov = [IoSliceMut::new(room)];
      let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
      let (n, fds) = match recvmsg::<()>(self.fd.as_raw_fd(), &mut iov, Some(&mut control), flags) {
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
      if let Err(message) = self.frames(reader) {
        self.hand_over(reader);
        drop(guard);
        return fail(self.id, message);
      }
    }
    self.hand_over(reader);
    drop(guard);
    if ended {
      self.end_by_peer();
    }
  }

  fn frames(self: &Arc<Self>, reader: &mut Reader) -> Result<(), String> {
    let Reader { decoder, pending_fd, batch } = reader;
    while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
      match framing::classify(self.mode, frame) {
        Some(Internal::HandleAck) => self.on_handle_reply(true),
        Some(Internal::HandleNack) => self.on_handle_reply(false),
        Some(Internal::Handle) => {
          let fd = pending_fd.take();
          let reply = if fd.is_some() { "NODE_HANDLE_ACK" } else { "NODE_HANDLE_NACK" };
          self.send_control(&json!({ "cmd": reply }));
          self.flush_batch(batch);
          let payload = Payload::new(self.mode == Mode::Json, frame.to_vec());
          events::push(Event::Handle { id: self.id, payload, fd });
        }
        Some(Internal::Cluster) if self.worker.is_some() => {
          self.flush_batch(batch);
          match framing::decode_value(self.mode, frame) {
            Some(message) => cluster::on_message(self, message),
            None => return Err("malformed NODE_CLUSTER message".into()),
          }
        }
        _ => append(self.mode, batch, frame),
      }
    }
    Ok(())
  }

  fn hand_over(&self, reader: &mut Reader) {
    self.flush_batch(&mut reader.batch);
  }

  fn flush_batch(&self, batch: &mut Vec<u8>) {
    if !batch.is_empty() {
      let payload = Payload::new(self.mode == Mode::Json, std::mem::take(batch));
      events::push(Event::Messages { id: self.id, payload });
    }
  }

  fn on_handle_reply(&self, acked: bool) {
    let mut writer = lock(&self.writer);
    match writer.on_reply(acked) {
      // A reply with nothing in flight is the peer's confusion, not ours to crash on.
      Reply::Unsolicited => return,
      Reply::Acked { from_js: true } => events::push(Event::HandleAcked { id: self.id }),
      Reply::Lost { from_js: true } => events::push(Event::HandleLost { id: self.id }),
      Reply::Acked { .. } | Reply::Lost { .. } | Reply::Resent => {}
    }
    self.flush_and_report_locked(&mut writer);
  }

  fn end_by_peer(&self) {
    if lock(&CHANNELS).remove(&self.id).is_none() {
      return;
    }
    lock(&self.writer).close();
    self.detach();
    events::push(Event::Disconnect { id: self.id });
  }

  fn detach(&self) {
    reactor::deregister(self.fd.as_fd());
    // A writer's socket is Node's too: closing our duplicate is all it takes, and Node's close
    // of its own fd then ends the channel.
    if self.reads {
      let _ = shutdown(self.fd.as_raw_fd(), Shutdown::Both);
    }
    if self.worker.is_some() {
      cluster::on_disconnect(self.id);
    }
  }
}

fn append(mode: Mode, batch: &mut Vec<u8>, frame: &[u8]) {
  match mode {
    Mode::Json => {
      batch.extend_from_slice(frame);
      batch.push(b'\n');
    }
    Mode::Advanced => {
      batch.extend_from_slice(&(frame.len() as u32).to_be_bytes());
      batch.extend_from_slice(frame);
    }
  }
}


/// What a peer's ACK or NACK did to the handle in flight.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
  Unsolicited,
  Acked { from_js: bool },
  /// NACKed: queued again, fd and all, ahead of everything not yet started.
  Resent,
  /// NACKed on the last try.
  Lost { from_js: bool },
}

impl Writer {
  fn on_reply(&mut self, acked: bool) -> Reply {
    let Some(inflight) = self.awaiting.pop_front() else { return Reply::Unsolicited };
    let InFlight { frame, fd, tries, from_js, end, .. } = inflight;
    self.replied_through = end;
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
    chunk.bytes.len() <= ATOMIC_FRAME && self.written + chunk.bytes.len() as u64 - self.replied_through <= PIPELINE_WINDOW
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
    None => sendmsg::<()>(fd, &iov, &[], flags, None),
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
}
