//! Node's IPC framing, both modes: JSON lines and 4-byte big-endian length-prefixed V8 payloads.
//!
//! The decoder reads straight into its own buffer (no copy per read) and yields frames as slices
//! of it. Scanning resumes where the last scan stopped and consumed bytes are dropped only once
//! they are at least half the buffer, so a 64 MB frame arriving in 64 KB reads costs linear time.

use std::ffi::c_int;

use serde_json::{json, Value};

use crate::v8codec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
  Json,
  Advanced,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
  /// A frame larger than the channel's limit: the stream cannot be resynchronised.
  TooLarge { limit: usize },
}

impl std::fmt::Display for FrameError {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    match self {
      FrameError::TooLarge { limit } => write!(f, "message larger than the channel limit of {limit} bytes"),
    }
  }
}

const RETAINED: usize = 1 << 20;

pub struct Decoder {
  mode: Mode,
  /// Initialised storage; the data is `buf[start..end]`, the rest is room for the next read.
  buf: Vec<u8>,
  /// Start of the first byte not yet yielded.
  start: usize,
  end: usize,
  /// JSON mode: where the next search for a newline begins (everything before has none).
  scan: usize,
  limit: usize,
}

impl Decoder {
  pub fn new(mode: Mode, limit: usize) -> Decoder {
    Decoder { mode, buf: Vec::new(), start: 0, end: 0, scan: 0, limit }
  }

  /// At least `want` bytes of room after the data, for the next read; `filled` records its size.
  pub fn spare(&mut self, want: usize) -> &mut [u8] {
    self.compact();
    if self.buf.len() - self.end < want {
      // Only newly grown storage is zeroed; later reads reuse it.
      self.buf.resize(self.end + want, 0);
    }
    &mut self.buf[self.end..]
  }

  pub fn filled(&mut self, n: usize) {
    self.end += n;
  }

  #[cfg(test)]
  pub fn feed(&mut self, data: &[u8]) {
    self.spare(data.len())[..data.len()].copy_from_slice(data);
    self.filled(data.len());
  }

  /// Bytes received but not yet part of a complete frame.
  pub fn pending(&self) -> usize {
    self.end - self.start
  }

  /// The next complete frame (without newline or length prefix), if one is buffered.
  pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
    match self.mode {
      Mode::Json => self.next_line(),
      Mode::Advanced => self.next_prefixed(),
    }
  }

  fn next_line(&mut self) -> Result<Option<&[u8]>, FrameError> {
    let from = self.scan.max(self.start);
    match memchr(b'\n', &self.buf[from..self.end]) {
      Some(at) => {
        let (begin, end) = (self.start, from + at);
        if end - begin > self.limit {
          return Err(FrameError::TooLarge { limit: self.limit });
        }
        self.start = end + 1;
        self.scan = self.start;
        Ok(Some(&self.buf[begin..end]))
      }
      None => {
        self.scan = self.end;
        if self.pending() > self.limit {
          return Err(FrameError::TooLarge { limit: self.limit });
        }
        Ok(None)
      }
    }
  }

  fn next_prefixed(&mut self) -> Result<Option<&[u8]>, FrameError> {
    let avail = &self.buf[self.start..self.end];
    if avail.len() < 4 {
      return Ok(None);
    }
    let size = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
    if size > self.limit {
      return Err(FrameError::TooLarge { limit: self.limit });
    }
    if avail.len() - 4 < size {
      return Ok(None);
    }
    let begin = self.start + 4;
    self.start = begin + size;
    Ok(Some(&self.buf[begin..begin + size]))
  }

  fn compact(&mut self) {
    if self.start == self.end {
      self.start = 0;
      self.end = 0;
      self.scan = 0;
      // Give back what one huge message grew, keeping room for ordinary reads.
      if self.buf.len() > RETAINED {
        self.buf.truncate(RETAINED);
        self.buf.shrink_to_fit();
      }
    } else if self.start > 0 && self.start >= self.end - self.start {
      self.buf.copy_within(self.start..self.end, 0);
      self.end -= self.start;
      self.scan -= self.start.min(self.scan);
      self.start = 0;
    }
  }
}

/// libc's memchr, which is vectorized: a byte-by-byte search was the biggest cost of reading
/// 64 KB JSON messages (a fifth of the parent's time in perf).
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
  // SAFETY: reads at most `haystack.len()` bytes from its start, all within the slice.
  let found = unsafe { nix::libc::memchr(haystack.as_ptr().cast(), c_int::from(needle), haystack.len()) };
  (!found.is_null()).then(|| found as usize - haystack.as_ptr() as usize)
}

/// Node's internal messages that the Rust side acts on without waiting for JavaScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Internal {
  HandleAck,
  HandleNack,
  /// `NODE_HANDLE` envelope: an fd travels with it.
  Handle,
  Cluster,
}

const JSON_ACK: &[u8] = br#"{"cmd":"NODE_HANDLE_ACK"}"#;
const JSON_NACK: &[u8] = br#"{"cmd":"NODE_HANDLE_NACK"}"#;
const JSON_HANDLE: &[u8] = br#"{"cmd":"NODE_HANDLE","#;
const JSON_CLUSTER: &[u8] = br#"{"cmd":"NODE_CLUSTER","#;

/// Classifies a frame by its leading bytes. Node always writes `cmd` first in its own internal
/// messages, so a prefix test is exact for them and costs nothing for user messages.
pub fn classify(mode: Mode, frame: &[u8]) -> Option<Internal> {
  match mode {
    Mode::Json => {
      let frame = frame.trim_ascii();
      if frame == JSON_ACK {
        Some(Internal::HandleAck)
      } else if frame == JSON_NACK {
        Some(Internal::HandleNack)
      } else if frame.starts_with(JSON_HANDLE) {
        Some(Internal::Handle)
      } else if frame.starts_with(JSON_CLUSTER) {
        Some(Internal::Cluster)
      } else {
        None
      }
    }
    Mode::Advanced => classify_v8(frame),
  }
}

/// V8 layout of `{cmd: "NODE_…", …}`: header `ff <version>`, `o`, one-byte string "cmd",
/// one-byte string value; the object closes with `{ <count>` when `cmd` is its only property.
fn classify_v8(frame: &[u8]) -> Option<Internal> {
  let rest = frame.strip_prefix(&[0xff])?.get(1..)?;
  let rest = rest.strip_prefix(b"o\"\x03cmd\"")?;
  let (&len, rest) = rest.split_first()?;
  let cmd = rest.get(..len as usize)?;
  let only_cmd = rest.get(len as usize..) == Some(b"{\x01");
  match cmd {
    b"NODE_HANDLE_ACK" if only_cmd => Some(Internal::HandleAck),
    b"NODE_HANDLE_NACK" if only_cmd => Some(Internal::HandleNack),
    b"NODE_HANDLE" => Some(Internal::Handle),
    b"NODE_CLUSTER" => Some(Internal::Cluster),
    _ => None,
  }
}

/// Our reply to a received `NODE_HANDLE`: ACK when its fd came with it, NACK when not.
pub fn handle_reply(acked: bool) -> Value {
  json!({ "cmd": if acked { "NODE_HANDLE_ACK" } else { "NODE_HANDLE_NACK" } })
}

/// The envelope in which Node sends a message that carries an fd (`native` names what the fd
/// is, e.g. `net.Native`).
pub fn handle_envelope(native: &str, message: Value) -> Value {
  json!({ "cmd": "NODE_HANDLE", "type": native, "msg": message })
}

/// Parses a frame into a value, for the internal messages the Rust side reads in full.
pub fn decode_value(mode: Mode, frame: &[u8]) -> Option<Value> {
  match mode {
    Mode::Json => serde_json::from_slice(frame).ok(),
    Mode::Advanced => v8codec::decode(frame).ok(),
  }
}

/// One complete frame on the wire for `value`.
pub fn encode_frame(mode: Mode, value: &Value) -> Vec<u8> {
  match mode {
    Mode::Json => {
      // serde_json's compact form never contains a raw newline, so the terminator is unambiguous.
      let mut out = serde_json::to_vec(value).expect("serializing a JSON value cannot fail");
      out.push(b'\n');
      out
    }
    Mode::Advanced => {
      let payload = v8codec::encode(value);
      let mut out = Vec::with_capacity(payload.len() + 4);
      out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
      out.extend_from_slice(&payload);
      out
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn frames(dec: &mut Decoder) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(f) = dec.next_frame().unwrap() {
      out.push(f.to_vec());
    }
    out
  }

  #[test]
  fn json_many_messages_in_one_read_and_a_partial_tail() {
    let mut dec = Decoder::new(Mode::Json, 1 << 20);
    dec.feed(b"{\"a\":1}\n\"str\"\n42\n{\"b\":");
    assert_eq!(frames(&mut dec), vec![b"{\"a\":1}".to_vec(), b"\"str\"".to_vec(), b"42".to_vec()]);
    assert_eq!(dec.pending(), 5);
    dec.feed(b"2}\n");
    assert_eq!(frames(&mut dec), vec![b"{\"b\":2}".to_vec()]);
    assert_eq!(dec.pending(), 0);
  }

  #[test]
  fn json_split_at_every_byte_including_inside_multibyte_utf8() {
    let wire = "{\"s\":\"héllo 日本 😀\"}\n[1,2]\n".as_bytes();
    for cut in 0..=wire.len() {
      let mut dec = Decoder::new(Mode::Json, 1 << 20);
      let mut got = Vec::new();
      dec.feed(&wire[..cut]);
      got.extend(frames(&mut dec));
      dec.feed(&wire[cut..]);
      got.extend(frames(&mut dec));
      assert_eq!(got, vec!["{\"s\":\"héllo 日本 😀\"}".as_bytes().to_vec(), b"[1,2]".to_vec()], "cut at {cut}");
    }
  }

  #[test]
  fn reads_into_spare_room() {
    let mut dec = Decoder::new(Mode::Json, 1 << 20);
    let room = dec.spare(16);
    assert!(room.len() >= 16);
    room[..4].copy_from_slice(b"1\n2\n");
    dec.filled(4);
    assert_eq!(frames(&mut dec), vec![b"1".to_vec(), b"2".to_vec()]);
  }

  #[test]
  fn json_line_over_the_limit_is_an_error() {
    let mut dec = Decoder::new(Mode::Json, 8);
    dec.feed(b"123456789");
    assert_eq!(dec.next_frame(), Err(FrameError::TooLarge { limit: 8 }));
  }

  #[test]
  fn advanced_length_header_split_across_reads() {
    let wire = [0, 0, 0, 7, 0xff, 0x0f, 0x22, 0x03, b's', b't', b'r', 0, 0, 0, 2, 0xff, 0x0f];
    for cut in 0..=wire.len() {
      let mut dec = Decoder::new(Mode::Advanced, 1 << 20);
      let mut got = Vec::new();
      dec.feed(&wire[..cut]);
      got.extend(frames(&mut dec));
      dec.feed(&wire[cut..]);
      got.extend(frames(&mut dec));
      assert_eq!(got, vec![wire[4..11].to_vec(), wire[15..].to_vec()], "cut at {cut}");
    }
  }

  #[test]
  fn advanced_declared_length_over_the_limit_is_an_error_before_buffering() {
    let mut dec = Decoder::new(Mode::Advanced, 100);
    dec.feed(&[0x80, 0, 0, 0]);
    assert_eq!(dec.next_frame(), Err(FrameError::TooLarge { limit: 100 }));
  }

  #[test]
  fn large_message_in_small_reads_is_linear() {
    // 64 MB in 64 KB reads: a quadratic rescan or compaction would take minutes, not milliseconds.
    let size = 64 << 20;
    let chunk = vec![b'x'; 64 << 10];
    let mut dec = Decoder::new(Mode::Json, usize::MAX);
    let started = std::time::Instant::now();
    for _ in 0..size / chunk.len() {
      dec.feed(&chunk);
      assert_eq!(dec.next_frame().unwrap(), None);
    }
    dec.feed(b"\n");
    assert_eq!(dec.next_frame().unwrap().map(<[u8]>::len), Some(size));
    assert!(started.elapsed().as_secs() < 20, "took {:?}", started.elapsed());
  }

  #[test]
  fn classifies_node_internal_messages_by_prefix() {
    let j = |s: &str| classify(Mode::Json, s.as_bytes());
    assert_eq!(j(r#"{"cmd":"NODE_HANDLE_ACK"}"#), Some(Internal::HandleAck));
    assert_eq!(j(r#"{"cmd":"NODE_HANDLE_NACK"}"#), Some(Internal::HandleNack));
    assert_eq!(j(r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":1}"#), Some(Internal::Handle));
    assert_eq!(j(r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#), Some(Internal::Cluster));
    assert_eq!(j(r#"{"cmd":"NODE_HANDLE_ACKX"}"#), None);
    assert_eq!(j(r#""{\"cmd\":\"NODE_HANDLE_ACK\"}""#), None);
    assert_eq!(j(r#"{"x":1}"#), None);

    // Captured from Node 20: {cmd:'NODE_HANDLE_ACK'} in advanced mode.
    let mut ack = vec![0xff, 0x0f, b'o', b'"', 3];
    ack.extend_from_slice(b"cmd\"\x0fNODE_HANDLE_ACK{\x01");
    assert_eq!(classify(Mode::Advanced, &ack), Some(Internal::HandleAck));
    assert_eq!(classify(Mode::Advanced, &ack[..ack.len() - 2]), None);
  }

  #[test]
  fn encoded_frames_decode_back() {
    let v = json!({"cmd": "NODE_CLUSTER", "act": "newconn", "key": "null:0:4:undefined:0", "seq": 3});
    for mode in [Mode::Json, Mode::Advanced] {
      let wire = encode_frame(mode, &v);
      let mut dec = Decoder::new(mode, 1 << 20);
      dec.feed(&wire);
      let frame = dec.next_frame().unwrap().unwrap().to_vec();
      assert_eq!(decode_value(mode, &frame), Some(v.clone()));
    }
  }

  /// Deterministic xorshift64*: the fuzz cases are the same on every run, with no extra crate.
  struct Rng(u64);

  impl Rng {
    fn next(&mut self) -> u64 {
      self.0 ^= self.0 >> 12;
      self.0 ^= self.0 << 25;
      self.0 ^= self.0 >> 27;
      self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
      (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
      (0..len).map(|_| self.next() as u8).collect()
    }

    /// Mostly small sizes, now and then one past a read buffer or the retained size.
    fn size(&mut self) -> usize {
      match self.below(20) {
        0 => self.below(300_000),
        1..=3 => self.below(5_000),
        _ => self.below(64),
      }
    }
  }

  /// Feeds `wire` in random pieces through `spare`/`filled` (as the reader does) and collects every
  /// frame, stopping at the first error.
  fn feed_randomly(rng: &mut Rng, dec: &mut Decoder, wire: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
      let piece = match rng.below(4) {
        0 => 1,
        1 => 1 + rng.below(16),
        2 => 1 + rng.below(4096),
        _ => 1 + rng.below(300_000),
      }
      .min(wire.len() - at);
      let room = dec.spare(piece.max(1 + rng.below(1 << 16)));
      assert!(room.len() >= piece);
      room[..piece].copy_from_slice(&wire[at..at + piece]);
      dec.filled(piece);
      at += piece;
      loop {
        match dec.next_frame() {
          Ok(Some(frame)) => out.push(frame.to_vec()),
          Ok(None) => break,
          Err(e) => return (out, Some(e)),
        }
      }
    }
    (out, None)
  }

  #[test]
  fn fuzz_random_splits_of_valid_streams_reassemble_exactly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..300 {
      for mode in [Mode::Json, Mode::Advanced] {
        let count = 1 + rng.below(40);
        let frames: Vec<Vec<u8>> = (0..count)
          .map(|_| {
            let len = rng.size();
            let mut frame = rng.bytes(len);
            if mode == Mode::Json {
              // Any byte but the terminator; JSON mode frames never contain a newline.
              frame.iter_mut().filter(|b| **b == b'\n').for_each(|b| *b = b' ');
            }
            frame
          })
          .collect();
        let mut wire = Vec::new();
        for frame in &frames {
          match mode {
            Mode::Json => {
              wire.extend_from_slice(frame);
              wire.push(b'\n');
            }
            Mode::Advanced => {
              wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
              wire.extend_from_slice(frame);
            }
          }
        }
        let mut dec = Decoder::new(mode, 1 << 20);
        let (got, err) = feed_randomly(&mut rng, &mut dec, &wire);
        assert_eq!(err, None, "case {case} {mode:?}");
        assert_eq!(got.len(), frames.len(), "case {case} {mode:?}: frame count");
        assert!(got == frames, "case {case} {mode:?}: frames differ");
        assert_eq!(dec.pending(), 0, "case {case} {mode:?}");
      }
    }
  }

  #[test]
  fn fuzz_garbage_never_panics_and_respects_the_limit() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for case in 0..400 {
      let limit = [1, 7, 100, 4096, 1 << 20][rng.below(5)];
      for mode in [Mode::Json, Mode::Advanced] {
        let len = rng.size();
        let mut wire = rng.bytes(len);
        // Sprinkle terminators and plausible length prefixes among the noise.
        for _ in 0..rng.below(8) {
          if !wire.is_empty() {
            let at = rng.below(wire.len());
            wire[at] = b'\n';
          }
        }
        let mut dec = Decoder::new(mode, limit);
        let (frames, err) = feed_randomly(&mut rng, &mut dec, &wire);
        let consumed: usize = frames.iter().map(|f| f.len() + if mode == Mode::Json { 1 } else { 4 }).sum();
        assert!(consumed <= wire.len(), "case {case} {mode:?}: yielded more than was fed");
        for frame in &frames {
          assert!(frame.len() <= limit || mode == Mode::Json, "case {case}: an advanced frame over the limit");
          // Whatever arrives, classifying and decoding it must not panic.
          let _ = classify(mode, frame);
          let _ = decode_value(mode, frame);
        }
        if err.is_none() {
          // Without an error, what is still buffered is an incomplete frame under the limit.
          assert!(
            dec.pending() <= limit.max(4) + 4 || mode == Mode::Advanced,
            "case {case} {mode:?}: buffered {} over limit {limit}",
            dec.pending()
          );
        } else {
          assert_eq!(err, Some(FrameError::TooLarge { limit }));
        }
      }
    }
  }

  #[test]
  fn json_line_over_the_limit_is_an_error_even_when_it_arrives_whole() {
    // The limit must not depend on where reads happen to split the stream.
    let mut dec = Decoder::new(Mode::Json, 8);
    dec.feed(b"123456789\n");
    assert_eq!(dec.next_frame(), Err(FrameError::TooLarge { limit: 8 }));
  }
}
