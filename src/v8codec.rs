//! Codec for the subset of V8's `ValueSerializer` format that Node's
//! child_process "advanced" serialization puts on the IPC channel (V8's
//! value-serializer.cc is the authority). Payloads are header + one value; the 4-byte length
//! prefix of the frame is not handled here.
//!
//! Decoding maps JS values onto JSON the way Node's JSON mode would be
//! closest to: `undefined`/holes/NaN become `null`, ArrayBufferViews become
//! `{"type":"Buffer","data":[..]}`, Maps become objects, Sets arrays, Dates
//! milliseconds. Encoding only ever sees JSON, so it writes plain objects,
//! dense arrays, strings, numbers, booleans and `null`, byte-for-byte as V8
//! does for freshly built values (object keys in `serde_json::Map` order).
//!
//! The Rust side reads only `NODE_CLUSTER` messages and writes only its replies, yet the decoder
//! covers the whole format on purpose: a worker's `queryServer` spreads the user's `listen()`
//! options into the message, so any value a program passes there reaches us, and a decoder that
//! refused one would close that worker's channel. What it cannot represent in JSON it maps as
//! above; the captured-byte tests pin each shape to what Node writes.

use serde_json::{Map, Number, Value};
use std::fmt;

/// Format version Node 20 (V8 11.3) writes; its reader accepts 13..=15.
const VERSION: u8 = 15;
const MIN_VERSION: u32 = 13;
/// Bounds recursion (containers, error causes, nested host objects). A level
/// costs up to ~2 KiB of stack in debug builds (~0.5 KiB in release), so this
/// fits a 2 MiB thread; JSON mode (serde_json) stops at 128.
const MAX_DEPTH: usize = 500;
/// Longest BigInt (in bytes) turned into decimal; conversion is quadratic.
const MAX_BIGINT_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
  pub offset: usize,
  pub reason: &'static str,
}

impl fmt::Display for DecodeError {
  fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "invalid V8 payload at byte {}: {}", self.offset, self.reason)
  }
}

impl std::error::Error for DecodeError {}

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one payload (header + value, without the frame's length prefix).
pub fn decode(payload: &[u8]) -> Result<Value> {
  // Back references copy earlier values, but which ids are referenced is
  // only known at the end. The first pass finds out; only if any `^` was
  // seen does a second pass keep copies of exactly those values, so plain
  // messages are decoded once and nothing is copied needlessly.
  let (value, wanted) = Decoder::new(payload, Vec::new()).run()?;
  if !wanted.contains(&true) {
    return Ok(value);
  }
  Decoder::new(payload, wanted).run().map(|(value, _)| value)
}

/// Encodes a payload (header + value) without the frame's length prefix.
/// Two-byte strings are aligned as V8 does when the prefix (4 bytes) is added.
pub fn encode(value: &Value) -> Vec<u8> {
  let mut out = vec![0xFF, VERSION];
  write_value(&mut out, value);
  out
}

struct Reader<'a> {
  buf: &'a [u8],
  pos: usize,
}

impl<'a> Reader<'a> {
  fn err(&self, reason: &'static str) -> DecodeError {
    DecodeError { offset: self.pos, reason }
  }

  fn byte(&mut self) -> Result<u8> {
    let b = *self.buf.get(self.pos).ok_or_else(|| self.err("unexpected end of input"))?;
    self.pos += 1;
    Ok(b)
  }

  fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
    let end =
      self.pos.checked_add(n).filter(|&end| end <= self.buf.len()).ok_or_else(|| self.err("length exceeds input"))?;
    let bytes = &self.buf[self.pos..end];
    self.pos = end;
    Ok(bytes)
  }

  /// Unsigned LEB128; like V8, bits beyond 32 are dropped.
  fn varint(&mut self) -> Result<u32> {
    let mut value = 0u32;
    for shift in (0..35).step_by(7) {
      let b = self.byte()?;
      value |= u32::from(b & 0x7F) << shift;
      if b & 0x80 == 0 {
        return Ok(value);
      }
    }
    Err(self.err("varint too long"))
  }

  fn length(&mut self) -> Result<usize> {
    self.varint().map(|n| n as usize)
  }

  fn zigzag(&mut self) -> Result<i32> {
    let u = self.varint()?;
    Ok((u >> 1) as i32 ^ -((u & 1) as i32))
  }

  fn double(&mut self) -> Result<f64> {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(self.bytes(8)?);
    Ok(f64::from_le_bytes(raw))
  }

  /// V8 may put 0x00 padding before any tag (used to align two-byte strings).
  fn skip_padding(&mut self) {
    while self.buf.get(self.pos) == Some(&0) {
      self.pos += 1;
    }
  }

  fn tag(&mut self) -> Result<u8> {
    self.skip_padding();
    self.byte()
  }

  fn peek_tag(&mut self) -> Result<u8> {
    self.skip_padding();
    self.buf.get(self.pos).copied().ok_or_else(|| self.err("unexpected end of input"))
  }
}

/// A value kept for back references, with the cost of copying it.
struct Saved {
  value: Value,
  weight: usize,
  height: usize,
}

struct Decoder<'a> {
  r: Reader<'a>,
  depth: usize,
  /// Total weight that copies (back references, sparse arrays) may still
  /// produce, so a small payload cannot expand exponentially.
  budget: usize,
  /// Per V8 object id: whether some `^` refers to it.
  wanted: Vec<bool>,
  /// Per V8 object id: its finished value if wanted, `None` while it is
  /// still being decoded (a reference then is a cycle) or when unwanted.
  ids: Vec<Option<Saved>>,
}

impl<'a> Decoder<'a> {
  fn new(payload: &'a [u8], wanted: Vec<bool>) -> Self {
    Decoder {
      r: Reader { buf: payload, pos: 0 },
      depth: 0,
      budget: payload.len().saturating_mul(16).saturating_add(1 << 20),
      wanted,
      ids: Vec::new(),
    }
  }

  fn run(mut self) -> Result<(Value, Vec<bool>)> {
    if self.r.byte()? != 0xFF {
      return Err(DecodeError { offset: 0, reason: "missing header" });
    }
    let version = self.r.varint()?;
    if !(MIN_VERSION..=u32::from(VERSION)).contains(&version) {
      return Err(DecodeError { offset: 1, reason: "unsupported format version" });
    }
    // Trailing bytes are ignored, as Node's reader does.
    let value = self.value()?;
    Ok((value, self.wanted))
  }

  fn charge(&mut self, weight: usize) -> Result<()> {
    self.budget = self.budget.checked_sub(weight).ok_or_else(|| self.r.err("expansion limit exceeded"))?;
    Ok(())
  }

  /// Starts an object-like value: V8 numbers these in reading order.
  fn open(&mut self) -> Result<usize> {
    if self.depth >= MAX_DEPTH {
      return Err(self.r.err("nesting too deep"));
    }
    self.depth += 1;
    self.ids.push(None);
    Ok(self.ids.len() - 1)
  }

  fn close(&mut self, id: usize, value: Value) -> Result<Value> {
    self.depth -= 1;
    if self.wanted.get(id) == Some(&true) {
      let (weight, height) = measure(&value);
      self.charge(weight)?;
      self.ids[id] = Some(Saved { value: value.clone(), weight, height });
    }
    Ok(value)
  }

  fn value(&mut self) -> Result<Value> {
    // A plain dispatcher: this frame is on the stack once per nesting level.
    match self.r.tag()? {
      b'o' => self.object(),
      b'A' => self.dense_array(),
      b'a' => self.sparse_array(),
      b';' => self.map(),
      b'\'' => self.set(),
      b'r' => self.error(),
      b'\\' => self.host_object(),
      b'^' => self.back_reference(),
      tag @ (b'D' | b'y' | b'x' | b'n' | b'z' | b's' | b'R' | b'B') => self.leaf_object(tag),
      tag => self.primitive(tag),
    }
  }

  fn primitive(&mut self, tag: u8) -> Result<Value> {
    Ok(match tag {
      b'_' | b'0' | b'-' => Value::Null,
      b'T' => Value::Bool(true),
      b'F' => Value::Bool(false),
      b'I' => Value::from(self.r.zigzag()?),
      b'U' => Value::from(self.r.varint()?),
      b'N' => number(self.r.double()?),
      b'Z' => self.bigint()?,
      b'"' | b'c' | b'S' => Value::String(self.string_body(tag)?),
      _ => {
        self.r.pos -= 1;
        return Err(self.r.err("unknown tag"));
      }
    })
  }

  fn string_body(&mut self, tag: u8) -> Result<String> {
    let len = self.r.length()?;
    if tag == b'c' && len % 2 != 0 {
      return Err(self.r.err("odd two-byte string length"));
    }
    let bytes = self.r.bytes(len)?;
    Ok(match tag {
      b'"' => bytes.iter().map(|&b| char::from(b)).collect(),
      b'c' => {
        let units = bytes.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]]));
        char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect()
      }
      _ => String::from_utf8_lossy(bytes).into_owned(),
    })
  }

  /// Where V8 calls `ReadString`: a full string value, tag included.
  fn tagged_string(&mut self) -> Result<String> {
    match self.r.tag()? {
      tag @ (b'"' | b'c' | b'S') => self.string_body(tag),
      _ => Err(self.r.err("expected a string")),
    }
  }

  /// Digits are little-endian bytes; the bitfield is `byte_length << 1 | sign`.
  fn bigint(&mut self) -> Result<Value> {
    let bitfield = self.r.varint()?;
    let len = (bitfield >> 1) as usize & ((1 << 30) - 1);
    if len > MAX_BIGINT_BYTES {
      return Err(self.r.err("BigInt too large"));
    }
    let digits = self.r.bytes(len)?;
    let negative = bitfield & 1 == 1;
    let used = digits.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if used <= 16 {
      let magnitude = digits[..used].iter().rev().fold(0u128, |m, &b| m << 8 | u128::from(b));
      let f = magnitude as f64;
      // `as` saturates at u128::MAX, which 2^128 (a rounding of it) is not.
      if f as u128 == magnitude && f < 2f64.powi(128) {
        return Ok(number(if negative { -f } else { f }));
      }
    }
    let sign = if negative { "-" } else { "" };
    Ok(Value::String(format!("{sign}{}", decimal(&digits[..used]))))
  }

  fn object(&mut self) -> Result<Value> {
    let id = self.open()?;
    let mut map = Map::new();
    let count = self.properties(b'{', |key, value| match map.insert(key, value) {
      None => Ok(()),
      Some(_) => Err("duplicate property"),
    })?;
    if self.r.varint()? != count {
      return Err(self.r.err("property count mismatch"));
    }
    self.close(id, Value::Object(map))
  }

  fn dense_array(&mut self) -> Result<Value> {
    let len = self.r.length()?;
    // Every element takes at least one byte (V8 checks this too).
    if len > self.r.buf.len() - self.r.pos {
      return Err(self.r.err("array longer than input"));
    }
    let id = self.open()?;
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
      items.push(self.value()?);
    }
    self.array_end(b'$', id, items)
  }

  fn sparse_array(&mut self) -> Result<Value> {
    let len = self.r.length()?;
    self.charge(len)?;
    let id = self.open()?;
    self.array_end(b'@', id, vec![Value::Null; len])
  }

  /// Both array forms end with extra properties (indices for sparse arrays,
  /// named ones JSON would drop), then the property count and the length.
  fn array_end(&mut self, end: u8, id: usize, mut items: Vec<Value>) -> Result<Value> {
    let count = self.properties(end, |key, value| {
      if let Some(slot) = array_index(&key).and_then(|i| items.get_mut(i as usize)) {
        *slot = value;
      }
      Ok(())
    })?;
    if self.r.varint()? != count || self.r.length()? != items.len() {
      return Err(self.r.err("array trailer mismatch"));
    }
    self.close(id, Value::Array(items))
  }

  /// Reads key/value pairs up to `end`, returning how many there were.
  fn properties(
    &mut self,
    end: u8,
    mut put: impl FnMut(String, Value) -> std::result::Result<(), &'static str>,
  ) -> Result<u32> {
    let mut count = 0u32;
    while self.r.peek_tag()? != end {
      let key = self.key()?;
      let value = self.value()?;
      put(key, value).map_err(|reason| self.r.err(reason))?;
      count = count.wrapping_add(1);
    }
    self.r.pos += 1;
    Ok(count)
  }

  /// Kept out of `properties` so its temporaries are not on every level's frame.
  fn key(&mut self) -> Result<String> {
    match self.value()? {
      Value::String(s) => Ok(s),
      Value::Number(n) => Ok(number_key(&n)),
      _ => Err(self.r.err("invalid property key")),
    }
  }

  fn map(&mut self) -> Result<Value> {
    let id = self.open()?;
    let mut map = Map::new();
    while self.r.peek_tag()? != b':' {
      let key = match self.value()? {
        Value::String(s) => s,
        Value::Number(n) => number_key(&n),
        other => other.to_string(),
      };
      let value = self.value()?;
      map.insert(key, value);
    }
    self.r.pos += 1;
    // V8 counts keys and values separately.
    if self.r.length()? != map.len() * 2 {
      return Err(self.r.err("map length mismatch"));
    }
    self.close(id, Value::Object(map))
  }

  fn set(&mut self) -> Result<Value> {
    let id = self.open()?;
    let mut items = Vec::new();
    while self.r.peek_tag()? != b',' {
      items.push(self.value()?);
    }
    self.r.pos += 1;
    if self.r.length()? != items.len() {
      return Err(self.r.err("set length mismatch"));
    }
    self.close(id, Value::Array(items))
  }

  /// Sub-tags until '.': prototype letter, 'm' message, 's' stack, 'c'
  /// cause. Node 20 writes the cause before the stack, newer V8 after it.
  fn error(&mut self) -> Result<Value> {
    let id = self.open()?;
    let mut error = Map::new();
    error.insert("name".into(), "Error".into());
    loop {
      let (field, value) = match self.r.byte()? {
        b'.' => break,
        b'm' => ("message", Value::String(self.tagged_string()?)),
        b's' => ("stack", Value::String(self.tagged_string()?)),
        b'c' => ("cause", self.value()?),
        b'E' => ("name", "EvalError".into()),
        b'R' => ("name", "RangeError".into()),
        b'F' => ("name", "ReferenceError".into()),
        b'S' => ("name", "SyntaxError".into()),
        b'T' => ("name", "TypeError".into()),
        b'U' => ("name", "URIError".into()),
        _ => return Err(self.r.err("invalid error sub-tag")),
      };
      error.insert(field.into(), value);
    }
    self.close(id, Value::Object(error))
  }

  /// Node's IPC serializer writes varint 0 + an ArrayBufferView, or varint 1
  /// + a plain copy of any other native object.
  fn host_object(&mut self) -> Result<Value> {
    let id = self.open()?;
    let value = match self.r.varint()? {
      0 => {
        // 0..=12: Int8Array .. BigUint64Array, 9 DataView, 10 Buffer.
        if self.r.varint()? > 12 {
          return Err(self.r.err("unknown ArrayBufferView type"));
        }
        let len = self.r.length()?;
        buffer(self.r.bytes(len)?)
      }
      1 => self.value()?,
      _ => return Err(self.r.err("unknown host object kind")),
    };
    self.close(id, value)
  }

  /// Object-like values without nested values (they still take an id).
  fn leaf_object(&mut self, tag: u8) -> Result<Value> {
    let id = self.open()?;
    let value = match tag {
      b'D' | b'n' => number(self.r.double()?),
      b'y' => Value::Bool(true),
      b'x' => Value::Bool(false),
      b'z' => self.bigint()?,
      b's' => Value::String(self.tagged_string()?),
      b'R' => {
        self.tagged_string()?;
        self.r.varint()?;
        // Same as JSON.stringify(/re/).
        Value::Object(Map::new())
      }
      _ => {
        let len = self.r.length()?;
        buffer(self.r.bytes(len)?)
      }
    };
    self.close(id, value)
  }

  fn back_reference(&mut self) -> Result<Value> {
    let id = self.r.length()?;
    if id >= self.ids.len() {
      return Err(self.r.err("unknown back reference"));
    }
    if self.wanted.len() <= id {
      self.wanted.resize(id + 1, false);
    }
    self.wanted[id] = true;
    match &self.ids[id] {
      // First pass, or a cycle: JSON cannot express the latter.
      None => Ok(Value::Null),
      Some(saved) if self.depth + saved.height > MAX_DEPTH => Err(self.r.err("nesting too deep")),
      Some(saved) => {
        self.budget = self.budget.checked_sub(saved.weight).ok_or_else(|| self.r.err("expansion limit exceeded"))?;
        Ok(saved.value.clone())
      }
    }
  }
}

/// JS numbers as JSON: integers stay integers, NaN and infinities become null.
fn number(x: f64) -> Value {
  // Integral doubles below 2^63 convert to i64 exactly.
  if x.fract() == 0.0 && x.abs() < 9_223_372_036_854_775_808.0 {
    Value::from(x as i64)
  } else {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
  }
}

/// JS `String(key)` for numeric property keys (V8 writes array indices as numbers).
fn number_key(n: &Number) -> String {
  n.as_i64().map_or_else(|| n.to_string(), |i| i.to_string())
}

/// Canonical array index ("0".."4294967294"), which JS treats as a number key.
fn array_index(key: &str) -> Option<u32> {
  key.parse::<u32>().ok().filter(|&i| i != u32::MAX && i.to_string() == key)
}

fn buffer(bytes: &[u8]) -> Value {
  let mut map = Map::new();
  map.insert("type".into(), "Buffer".into());
  map.insert("data".into(), bytes.iter().map(|&b| Value::from(b)).collect());
  Value::Object(map)
}

/// Copy cost (nodes plus string bytes) and container height of a value.
fn measure(value: &Value) -> (usize, usize) {
  let add = |(w, h): (usize, usize), (cw, ch): (usize, usize)| (w + cw, h.max(ch + 1));
  match value {
    Value::Array(items) => items.iter().map(measure).fold((1, 1), add),
    Value::Object(map) => map.values().map(measure).fold((1 + map.keys().map(String::len).sum::<usize>(), 1), add),
    Value::String(s) => (1 + s.len(), 0),
    _ => (1, 0),
  }
}

/// Decimal digits of a little-endian magnitude.
fn decimal(le: &[u8]) -> String {
  // Most significant 32-bit limb first, so one pass divides by 10^9.
  let mut limbs: Vec<u32> =
    le.chunks(4).rev().map(|c| c.iter().rev().fold(0, |acc, &b| acc << 8 | u32::from(b))).collect();
  let mut groups = Vec::new();
  while limbs.iter().any(|&l| l != 0) {
    let mut rem = 0u64;
    for limb in &mut limbs {
      let cur = rem << 32 | u64::from(*limb);
      *limb = (cur / 1_000_000_000) as u32;
      rem = cur % 1_000_000_000;
    }
    groups.push(rem);
  }
  let mut out = groups.pop().unwrap_or(0).to_string();
  for group in groups.iter().rev() {
    out.push_str(&format!("{group:09}"));
  }
  out
}

fn write_varint(out: &mut Vec<u8>, mut n: u32) {
  while n >= 0x80 {
    out.push(n as u8 | 0x80);
    n >>= 7;
  }
  out.push(n as u8);
}

fn write_len(out: &mut Vec<u8>, n: usize) {
  // JSON values past 4 GiB do not fit V8's format anyway.
  write_varint(out, n as u32);
}

/// The value as a V8 Smi (31/32-bit tagged int), which V8 writes as `I`.
fn smi(n: &Number) -> Option<i32> {
  if let Some(i) = n.as_i64() {
    return i32::try_from(i).ok();
  }
  let f = n.as_f64()?;
  let fits = f.fract() == 0.0 && f >= f64::from(i32::MIN) && f <= f64::from(i32::MAX);
  (fits && !(f == 0.0 && f.is_sign_negative())).then_some(f as i32)
}

fn write_double(out: &mut Vec<u8>, n: &Number) {
  out.push(b'N');
  out.extend(n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
  match smi(n) {
    Some(i) => {
      out.push(b'I');
      write_varint(out, ((i << 1) ^ (i >> 31)) as u32);
    }
    None => write_double(out, n),
  }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
  if s.chars().all(|c| u32::from(c) <= 0xFF) {
    out.push(b'"');
    write_len(out, s.chars().count());
    out.extend(s.chars().map(|c| u32::from(c) as u8));
    return;
  }
  let units: Vec<u16> = s.encode_utf16().collect();
  let byte_len = units.len() * 2;
  let varint_len = (usize::BITS - (byte_len | 1).leading_zeros()).div_ceil(7) as usize;
  // V8 pads so the UTF-16 data starts at an even offset of the buffer.
  if (out.len() + 1 + varint_len) % 2 == 1 {
    out.push(0);
  }
  out.push(b'c');
  write_len(out, byte_len);
  out.extend(units.iter().flat_map(|u| u.to_le_bytes()));
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
  match value {
    Value::Null => out.push(b'0'),
    Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
    Value::Number(n) => write_number(out, n),
    Value::String(s) => write_string(out, s),
    Value::Array(items) => {
      out.push(b'A');
      write_len(out, items.len());
      // An all-number array holding any non-Smi is a double array in V8,
      // and V8 then writes every element as a double.
      let numbers: Vec<&Number> = items.iter().filter_map(|v| v.as_number()).collect();
      let doubles = numbers.len() == items.len() && numbers.iter().any(|n| smi(n).is_none());
      for item in items {
        match item {
          Value::Number(n) if doubles => write_double(out, n),
          _ => write_value(out, item),
        }
      }
      out.push(b'$');
      write_varint(out, 0);
      write_len(out, items.len());
    }
    Value::Object(map) => {
      out.push(b'o');
      for (key, item) in map {
        match array_index(key) {
          Some(i) => write_number(out, &Number::from(i)),
          None => write_string(out, key),
        }
        write_value(out, item);
      }
      out.push(b'{');
      write_len(out, map.len());
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use serde_json::json;

  fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
  }

  fn assert_decodes(cases: &[(&str, Value)]) {
    for (bytes, expected) in cases {
      assert_eq!(decode(&hex(bytes)).as_ref(), Ok(expected), "payload {bytes}");
    }
  }

  // Hex payloads not marked "hand-made" were captured from Node v20.20.2 with
  // a serializer equal to its IPC one (`internal/child_process/serialization`):
  // `s.writeHeader(); s.writeValue(x); s.releaseBuffer()`.

  #[test]
  fn decodes_node_ipc_messages() {
    assert_decodes(&[
            // {cmd:'NODE_CLUSTER', act:'online', seq:0}
            (
                "ff0f6f2203636d64220c4e4f44455f434c5553544552220361637422066f6e6c696e65220373657149007b03",
                json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0}),
            ),
            // queryServer with fd: undefined (advanced mode transmits it)
            (
                "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374220b71756572795365727665722205696e646578490022046461746130220761646472657373302204706f727449f67e220b61646472657373547970654908220266645f22076261636b6c6f674900220373657149027b0a",
                json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": null, "address": null,
                       "port": 8123, "addressType": 4, "fd": null, "backlog": 0, "seq": 1}),
            ),
            (
                "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374220b71756572795365727665722205696e6465784900220464617461302207616464726573732207302e302e302e302204706f72744900220b61646472657373547970652204756470342202666449012205666c6167734900220373657149047b0a",
                json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": null, "address": "0.0.0.0",
                       "port": 0, "addressType": "udp4", "fd": -1, "flags": 0, "seq": 2}),
            ),
            (
                "ff0f6f2203636d64220c4e4f44455f434c555354455222056572726e6f3022036b657922176e756c6c3a383132333a343a756e646566696e65643a30220361636b4902220464617461302208736f636b6e616d656f22076164647265737322023a3a220666616d696c792204495076362204706f727449f67e7b03220373657149007b07",
                json!({"cmd": "NODE_CLUSTER", "errno": null, "key": "null:8123:4:undefined:0", "ack": 1, "data": null,
                       "sockname": {"address": "::", "family": "IPv6", "port": 8123}, "seq": 0}),
            ),
            (
                "ff0f6f2203636d64220b4e4f44455f48414e444c45220474797065220a6e65742e4e617469766522036d73676f2203636d64220c4e4f44455f434c5553544552220361637422076e6577636f6e6e22036b657922176e756c6c3a383132333a343a756e646566696e65643a30220373657149027b047b03",
                json!({"cmd": "NODE_HANDLE", "type": "net.Native",
                       "msg": {"cmd": "NODE_CLUSTER", "act": "newconn", "key": "null:8123:4:undefined:0", "seq": 1}}),
            ),
            ("ff0f6f2203636d64220f4e4f44455f48414e444c455f41434b7b01", json!({"cmd": "NODE_HANDLE_ACK"})),
            (
                "ff0f6f2203636d64220c4e4f44455f434c5553544552220361636b49022208616363657074656454220373657149067b04",
                json!({"cmd": "NODE_CLUSTER", "ack": 1, "accepted": true, "seq": 3}),
            ),
            (
                "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374220b71756572795365727665722204646174616f220a7469636b65744b65797322606162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261626162616261627b01220373657149027b04",
                json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "data": {"ticketKeys": "ab".repeat(48)}, "seq": 1}),
            ),
        ]);
  }

  #[test]
  fn decodes_strings() {
    assert_decodes(&[
      ("ff0f220568e96c6c6f", json!("héllo")),
      // two-byte data already at an even offset: no padding
      ("ff0f6304e5652c67", json!("日本")),
      // {ab:'日本'}: a 0x00 padding byte precedes the `c` tag
      ("ff0f6f22026162006304e5652c677b01", json!({"ab": "日本"})),
      ("ff0f41032201780063043dd800de2201e9240003", json!(["x", "😀", "é"])),
      // 'a\ud800b': lone surrogate
      ("ff0f6306610000d86200", json!("a\u{FFFD}b")),
      // '日本abc'.slice(2) keeps a two-byte representation for Latin-1 text
      ("ff0f6306610062006300", json!("abc")),
      // hand-made: UTF-8 string tag (V8 reads but never writes it), stray
      // padding before tags, format version 13
      ("ff0f53046fc3a9e2", json!("o\u{e9}\u{FFFD}")),
      ("ff0d000041020000220161000054240002", json!(["a", true])),
    ]);
  }

  #[test]
  fn decodes_numbers_and_primitives() {
    assert_decodes(&[
            ("ff0f4909", json!(-5)),
            ("ff0f49feffffff0f", json!(2147483647)),
            ("ff0f4e0000000000007042", json!(1099511627776u64)),
            (
                "ff0f41094e000000000000f0bf4e000000000000e0c14e0000c0ffffffdf414e000000000000e0414e000000000000f83f4e000000000000d0bf4e00000000000070424e00000000000070c24e9c7500883ce4377e240009",
                json!([-1, -2147483648i64, 2147483647, 2147483648u64, 1.5, -0.25, 1099511627776u64, -1099511627776i64, 1e300]),
            ),
            // [NaN, Infinity, -Infinity, -0]
            ("ff0f41044e000000000000f87f4e000000000000f07f4e000000000000f0ff4e0000000000000080240004", json!([null, null, null, 0])),
            // [null, undefined, true, false]
            ("ff0f4104305f5446240004", json!([null, null, true, false])),
            // [123n, -(2n**70n), 2n**60n, 2n**64n + 1n, 0n]
            (
                "ff0f41055a107b000000000000005a21000000000000000040000000000000005a1000000000000000105a20010000000000000001000000000000005a00240005",
                json!([123, -1180591620717411303424.0, 1152921504606846976u64, "18446744073709551617", 0]),
            ),
            // [new Number(3), new String('s'), new Boolean(true), new Boolean(false), Object(5n)]
            ("ff0f41056e00000000000008407322017379787a100500000000000000240005", json!([3, "s", true, false, 5])),
            // new Date(1700000000123)
            ("ff0f4400b08756febc7842", json!(1700000000123u64)),
        ]);
  }

  #[test]
  fn decodes_containers() {
    assert_decodes(&[
      // {a:{b:[1,[2,{c:null}],[]]}, d:[]}
      (
        "ff0f6f2201616f22016241034902410249046f220163307b0124000241002400002400037b0122016441002400007b02",
        json!({"a": {"b": [1, [2, {"c": null}], []]}, "d": []}),
      ),
      // new Map([['k', 1], [2, 'two'], [true, null]])
      ("ff0f3b22016b49024904220374776f54303a06", json!({"k": 1, "2": "two", "true": null})),
      // new Set([1, 'a', null])
      ("ff0f274902220161302c03", json!([1, "a", null])),
      // a = []; a[1] = 'b'; a[4] = 2
      ("ff0f6105490222016249084904400205", json!([null, "b", null, null, 2])),
      // [1,,3] is holey, so V8 writes it sparse
      ("ff0f61034900490249044906400203", json!([1, null, 3])),
      // {1:'a', 4294967294:'b', 4294967295:'c', x:'d'}: index keys are numbers
      (
        "ff0f6f49022201614e0000c0ffffffef41220162220a343239343936373239352201632201782201647b04",
        json!({"1": "a", "4294967294": "b", "4294967295": "c", "x": "d"}),
      ),
      // Object.assign([1], {x:2}): named array properties are dropped, as in JSON
      ("ff0f410149022201784904240101", json!([1])),
    ]);
  }

  #[test]
  fn decodes_binary_and_special_objects() {
    assert_decodes(&[
      ("ff0f5c000a03010203", json!({"type": "Buffer", "data": [1, 2, 3]})),
      // new Uint16Array([1, 0x1234]): raw little-endian bytes
      ("ff0f5c00040401003412", json!({"type": "Buffer", "data": [1, 0, 0x34, 0x12]})),
      // [new ArrayBuffer(2), 1]
      ("ff0f4102420200004902240002", json!([{"type": "Buffer", "data": [0, 0]}, 1])),
      // [/ab+c/gi, 1]
      ("ff0f410252220461622b63034902240002", json!([{}, 1])),
      // [TypeError('bad') with stack 'TypeError: bad\n    at x', 1]
      (
        "ff0f410272546d2203626164732217547970654572726f723a206261640a20202020617420782e4902240002",
        json!([{"name": "TypeError", "message": "bad", "stack": "TypeError: bad\n    at x"}, 1]),
      ),
      // RangeError('r', {cause: 'why'}), stack 's': Node 20 writes cause before stack
      (
        "ff0f72526d220172632203776879732201732e",
        json!({"name": "RangeError", "message": "r", "stack": "s", "cause": "why"}),
      ),
      // hand-made: the same in newer V8's order (stack before cause)
      (
        "ff0f72526d220172732201736322037768792e",
        json!({"name": "RangeError", "message": "r", "stack": "s", "cause": "why"}),
      ),
    ]);
  }

  #[test]
  fn decodes_back_references() {
    let x = json!({"x": 1});
    assert_decodes(&[
      // r = {x:1}; {a: r, b: [r, r]}
      ("ff0f6f2201616f22017849027b0122016241025e015e012400027b02", json!({"a": x, "b": [x, x]})),
      // o = {n:1}; o.self = o: the cycle cannot be expressed, so null
      ("ff0f6f22016e4902220473656c665e007b02", json!({"n": 1, "self": null})),
      // t = new TCP(); t.foo = 7; [t, t]: host object kind 1 (plain copy),
      // then a back reference to the host object's id
      (
        "ff0f41025c016f220772656164696e6746220c6f6e636f6e6e656374696f6e302203666f6f490e7b035e01240002",
        json!([{"reading": false, "onconnection": null, "foo": 7}, {"reading": false, "onconnection": null, "foo": 7}]),
      ),
    ]);
  }

  #[test]
  fn rejects_malformed_payloads() {
    let cases: &[(&str, DecodeError)] = &[
      ("", DecodeError { offset: 0, reason: "unexpected end of input" }),
      ("0f30", DecodeError { offset: 0, reason: "missing header" }),
      ("ff0c30", DecodeError { offset: 1, reason: "unsupported format version" }),
      ("ff1030", DecodeError { offset: 1, reason: "unsupported format version" }),
      ("ff0f57", DecodeError { offset: 2, reason: "unknown tag" }),
      ("ff0f5e00", DecodeError { offset: 4, reason: "unknown back reference" }),
      ("ff0f6f7b01", DecodeError { offset: 5, reason: "property count mismatch" }),
      ("ff0f6f22016149022201614904 7b02", DecodeError { offset: 13, reason: "duplicate property" }),
      ("ff0f6f547b00", DecodeError { offset: 4, reason: "invalid property key" }),
      ("ff0f6303610000", DecodeError { offset: 4, reason: "odd two-byte string length" }),
      ("ff0f4105", DecodeError { offset: 4, reason: "array longer than input" }),
      ("ff0f49ffffffffff", DecodeError { offset: 8, reason: "varint too long" }),
      ("ff0f5c020000", DecodeError { offset: 4, reason: "unknown host object kind" }),
      ("ff0f5c000d00", DecodeError { offset: 5, reason: "unknown ArrayBufferView type" }),
      ("ff0f7278", DecodeError { offset: 4, reason: "invalid error sub-tag" }),
    ];
    for (bytes, expected) in cases {
      assert_eq!(decode(&hex(&bytes.replace(' ', ""))).as_ref(), Err(expected), "payload {bytes}");
    }
  }

  /// (JSON, what Node's IPC serializer writes for `JSON.parse` of it). Keys
  /// are listed in `serde_json::Map` order, which here equals JS order.
  const ENCODED: &[(&str, &str)] = &[
        (r#"{"cmd":"NODE_HANDLE_ACK"}"#, "ff0f6f2203636d64220f4e4f44455f48414e444c455f41434b7b01"),
        (r#"{"act":"queryServer","address":null,"addressType":4,"backlog":0,"cmd":"NODE_CLUSTER","data":null,"index":0,"port":8123,"seq":1}"#, "ff0f6f2203616374220b717565727953657276657222076164647265737330220b6164647265737354797065490822076261636b6c6f6749002203636d64220c4e4f44455f434c5553544552220464617461302205696e64657849002204706f727449f67e220373657149027b09"),
        (r#"{"ack":1,"cmd":"NODE_CLUSTER","data":null,"errno":null,"key":"null:8123:4:undefined:0","seq":0,"sockname":{"address":"::","family":"IPv6","port":8123}}"#, "ff0f6f220361636b49022203636d64220c4e4f44455f434c55535445522204646174613022056572726e6f3022036b657922176e756c6c3a383132333a343a756e646566696e65643a30220373657149002208736f636b6e616d656f22076164647265737322023a3a220666616d696c792204495076362204706f727449f67e7b037b07"),
        (r#"{"cmd":"NODE_HANDLE","msg":{"act":"newconn","cmd":"NODE_CLUSTER","key":"null:8123:4:undefined:0","seq":1},"type":"net.Native"}"#, "ff0f6f2203636d64220b4e4f44455f48414e444c4522036d73676f220361637422076e6577636f6e6e2203636d64220c4e4f44455f434c555354455222036b657922176e756c6c3a383132333a343a756e646566696e65643a30220373657149027b04220474797065220a6e65742e4e61746976657b03"),
        (r#""héllo""#, "ff0f220568e96c6c6f"),
        (r#""日本""#, "ff0f6304e5652c67"),
        (r#"{"ab":"日本"}"#, "ff0f6f22026162006304e5652c677b01"),
        (r#"{"a":"日本"}"#, "ff0f6f2201616304e5652c677b01"),
        (r#"["x","😀","é",""]"#, "ff0f41042201780063043dd800de2201e92200240004"),
        (r#""ÿ""#, "ff0f2201ff"),
        (r#"[0,-1,1,-2147483648,2147483647,"s"]"#, "ff0f410649004901490249ffffffff0f49feffffff0f220173240006"),
        (r#"[2147483648,-2147483649,1099511627776,1.5,-0.25,1e300,3]"#, "ff0f41074e000000000000e0414e000020000000e0c14e00000000000070424e000000000000f83f4e000000000000d0bf4e9c7500883ce4377e4e0000000000000840240007"),
        (r#"[1.5,"x",2]"#, "ff0f41034e000000000000f83f2201784904240003"),
        (r#"[1,2,3]"#, "ff0f4103490249044906240003"),
        (r#"[1.0,2]"#, "ff0f410249024904240002"),
        (r#"{"1":"a","2":"b","x":[true,false,null]}"#, "ff0f6f4902220161490422016222017841035446302400037b03"),
        (r#"{"4294967294":1,"4294967295":2}"#, "ff0f6f4e0000c0ffffffef414902220a3432393439363732393549047b02"),
        (r#"{"2147483648":1}"#, "ff0f6f4e000000000000e04149027b01"),
        (r#"{"a":{},"b":[],"c":[[]]}"#, "ff0f6f2201616f7b002201624100240000220163410141002400002400017b03"),
        (r#"null"#, "ff0f30"),
        (r#"true"#, "ff0f54"),
        (r#"-5"#, "ff0f4909"),
        (r#"1.5"#, "ff0f4e000000000000f83f"),
        (r#""""#, "ff0f2200"),
    ];

  #[test]
  fn encode_matches_node() {
    for (text, bytes) in ENCODED {
      let value: Value = serde_json::from_str(text).unwrap();
      assert_eq!(encode(&value), hex(bytes), "value {text}");
    }
    // -0 is not a Smi, so V8 writes a double (captured: -0 and 2 ** 64).
    assert_eq!(encode(&json!(-0.0)), hex("ff0f4e0000000000000080"));
    assert_eq!(encode(&json!(u64::MAX)), hex("ff0f4e000000000000f043"));
  }

  #[test]
  fn round_trips() {
    // "[1.0,2]" is left out: integral floats come back as integers.
    let mut values: Vec<Value> = ENCODED
      .iter()
      .filter(|(text, _)| *text != "[1.0,2]")
      .map(|(text, _)| serde_json::from_str(text).unwrap())
      .collect();
    values
      .push(json!({"0": [], "01": "not an index", "-1": -1, "big": 1e300, "nested": {"a": [[["é", "日本", "😀"]]]}}));
    values.push(json!(["a\u{0}b", "\u{FFFF}", "x".repeat(300), "日".repeat(200)]));
    for value in values {
      assert_eq!(decode(&encode(&value)), Ok(value.clone()));
    }
    assert_eq!(decode(&encode(&json!([1.0, 2]))), Ok(json!([1, 2])));
  }

  fn valid_payloads() -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = ENCODED.iter().map(|(_, bytes)| hex(bytes)).collect();
    for bytes in [
            "ff0f6f2203636d64220c4e4f44455f434c55535445522203616374220b71756572795365727665722205696e646578490022046461746130220761646472657373302204706f727449f67e220b61646472657373547970654908220266645f22076261636b6c6f674900220373657149027b0a",
            "ff0f41055a107b000000000000005a21000000000000000040000000000000005a1000000000000000105a20010000000000000001000000000000005a00240005",
            "ff0f3b22016b49024904220374776f54303a06",
            "ff0f6105490222016249084904400205",
            "ff0f72526d220172632203776879732201732e",
            "ff0f6f2201616f22017849027b0122016241025e015e012400027b02",
            "ff0f41025c016f220772656164696e6746220c6f6e636f6e6e656374696f6e302203666f6f490e7b035e01240002",
            "ff0f4102420200004902240002",
        ] {
            payloads.push(hex(bytes));
        }
    payloads
  }

  #[test]
  fn every_truncation_fails() {
    for payload in valid_payloads() {
      assert!(decode(&payload).is_ok());
      for len in 0..payload.len() {
        assert!(decode(&payload[..len]).is_err(), "prefix {len} of {payload:02x?}");
      }
    }
  }

  #[test]
  fn nesting_is_capped() {
    // Sparse arrays use the most stack per level; this runs on a 2 MiB test thread.
    let nested = |depth: usize| {
      let mut p = vec![0xFF, 0x0F];
      p.extend([b'a', 1, b'I', 0].repeat(depth));
      p.push(b'0');
      p.extend([b'@', 1, 1].repeat(depth));
      p
    };
    assert!(decode(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(decode(&nested(MAX_DEPTH + 1)).unwrap_err().reason, "nesting too deep");
    let mut bomb = vec![0xFF, 0x0F];
    bomb.extend([b'A', 1].repeat(1 << 20));
    assert_eq!(decode(&bomb).unwrap_err().reason, "nesting too deep");
    // Nested host objects recurse without building containers.
    let mut hosts = vec![0xFF, 0x0F];
    hosts.extend([b'\\', 1].repeat(1 << 16));
    assert_eq!(decode(&hosts).unwrap_err().reason, "nesting too deep");
  }

  #[test]
  fn back_references_cannot_blow_up() {
    // Each array holds two references to the previous one: 2^60 nodes.
    let mut bomb = vec![0xFF, 0x0F, b'A', 60, b'A', 0, b'$', 0, 0];
    for id in 1..60u8 {
      bomb.extend([b'A', 2, b'^', id, b'^', id, b'$', 0, 2]);
    }
    bomb.extend([b'$', 0, 60]);
    assert_eq!(decode(&bomb).unwrap_err().reason, "expansion limit exceeded");
    // A copy of a deep value must not nest deeper than the cap either:
    // [300-deep array, `wrap` arrays around a reference to it].
    let deep = |wrap: usize| {
      let mut p = vec![0xFF, 0x0F, b'A', 2];
      p.extend([b'A', 1].repeat(300));
      p.push(b'0');
      p.extend([b'$', 0, 1].repeat(300));
      p.extend([b'A', 1].repeat(wrap));
      p.extend([b'^', 1]);
      p.extend([b'$', 0, 1].repeat(wrap));
      p.extend([b'$', 0, 2]);
      p
    };
    // outer array + wrappers + 300 levels copied: at most MAX_DEPTH.
    assert!(decode(&deep(MAX_DEPTH - 301)).is_ok());
    assert_eq!(decode(&deep(MAX_DEPTH - 300)).unwrap_err().reason, "nesting too deep");
    assert_eq!(measure(&json!({"ab": [1, {"c": "xy"}]})), (10, 3));
    // A huge sparse array is charged to the same budget.
    assert_eq!(decode(&hex("ff0f61ffffffff0f4000ffffffff0f")).unwrap_err().reason, "expansion limit exceeded");
  }

  #[test]
  fn random_and_mutated_input_never_panics() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      state
    };
    // Bias towards tag bytes so parsing gets past the first byte.
    const TAGS: &[u8] = b"_0-TFIUNZ\"cSoAa;'rD\\^yxnzsRB{$@:,.mE";
    let seeds = valid_payloads();
    for case in 0..20_000 {
      let mut payload = if case % 2 == 0 {
        seeds[next() as usize % seeds.len()].clone()
      } else {
        let len = next() as usize % 40;
        let mut p = vec![0xFF, 0x0F];
        p.extend((0..len).map(|_| match next() % 3 {
          0 => TAGS[next() as usize % TAGS.len()],
          1 => (next() % 4) as u8,
          _ => next() as u8,
        }));
        p
      };
      for _ in 0..next() % 4 {
        if payload.len() > 2 {
          let at = 2 + next() as usize % (payload.len() - 2);
          payload[at] = next() as u8;
        }
      }
      let _ = decode(&payload);
    }
  }

  #[test]
  fn fuzz_garbage_and_mutated_payloads_never_panic() {
    // Deterministic xorshift64*, fixed case count: the same inputs on every run.
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut next = move || {
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let seeds: Vec<Vec<u8>> = [
      "ff0f6f2203636d64220c4e4f44455f434c5553544552220361637422066f6e6c696e65220373657149007b03",
      "ff0f6f2201614102490249042400027b01",
      "ff0f22037374",
    ]
    .iter()
    .map(|s| hex(s))
    .collect();
    let tags = b"_0TFIUNZ\"cSo{A$a@;:',D^RBr\\VmlkKtPb";
    for _ in 0..20_000 {
      let mut payload = match next() % 3 {
        0 => (0..next() % 64).map(|_| next() as u8).collect(),
        // Header, then random tags and bytes: reaches deeper into the decoder.
        1 => {
          let mut p = vec![0xff, 0x0f];
          for _ in 0..next() % 64 {
            p.push(if next() % 2 == 0 { tags[(next() % tags.len() as u64) as usize] } else { next() as u8 });
          }
          p
        }
        _ => seeds[(next() % seeds.len() as u64) as usize].clone(),
      };
      for _ in 0..next() % 4 {
        if payload.is_empty() {
          break;
        }
        let at = (next() % payload.len() as u64) as usize;
        match next() % 3 {
          0 => payload[at] = next() as u8,
          1 => payload.truncate(at),
          _ => payload.insert(at, next() as u8),
        }
      }
      let _ = decode(&payload);
    }
  }
}
