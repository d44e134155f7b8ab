'use strict';
// V8's serialization format (V8's value-serializer.cc is the authority) written and read in
// JavaScript for the values messages are mostly made of: plain objects, arrays without holes or
// extra properties, strings, numbers, booleans, null and undefined, none of them reached twice.
// V8's own Serializer costs a native object and several native calls per message; for such
// values this is several times cheaper, and the peer reads the same values back.
//
// Anything else (Buffers, Dates, Maps, class instances, shared or circular references, …) is
// left to V8's Serializer: `encode` returns undefined and `decode` NOT_PLAIN, before anything
// is written or returned. A getter met before such a value has then run twice.
const v8 = require('v8');
const { isProxy, isArgumentsObject, isModuleNamespaceObject } = require('util').types;

const NOT_PLAIN = Symbol('not plain');

// The header's version, as the running V8 writes it.
const VERSION = v8.serialize(null)[1];
const HEADER = 0xff;

// V8's tags for the values above.
const PADDING = 0x00;
const UNDEFINED = 0x5f; // _
const NULL = 0x30; // 0
const TRUE = 0x54; // T
const FALSE = 0x46; // F
const INT32 = 0x49; // I
const UINT32 = 0x55; // U
const DOUBLE = 0x4e; // N
const ONE_BYTE_STRING = 0x22; // "
const TWO_BYTE_STRING = 0x63; // c
const UTF8_STRING = 0x53; // S
const BEGIN_OBJECT = 0x6f; // o
const END_OBJECT = 0x7b; // {
const BEGIN_DENSE_ARRAY = 0x41; // A
const END_DENSE_ARRAY = 0x24; // $
const HOLE = 0x2d; // -

// Deeper values go to V8, whose stack checks give Node's error.
const MAX_DEPTH = 128;
// A character V8 cannot store one byte per character.
const BEYOND_LATIN1 = /[^\x00-\xff]/;
// Shorter strings are checked and copied here; longer ones through Buffer's native methods.
const SHORT_STRING = 64;
// Frames up to this size are copied out of the scratch buffer here, longer ones natively.
const COPY_IN_JS = 256;
// Frames from this size on are lent: a view of the scratch buffer, valid until the next encode,
// for the caller to write at once. Copying one cost a fresh allocation and its page faults (~30 µs
// for 64 KB), where writing it costs a system call.
const LENT_FROM = 16 * 1024;
// The scratch buffer frames are written into, and the size past which it is not kept.
const SCRATCH = 64 * 1024;
const SCRATCH_KEPT = 1024 * 1024;
// The frame's length prefix, written once the payload's size is known.
const PREFIX = 4;

let scratch = Buffer.allocUnsafeSlow(SCRATCH);
let at = 0;
let encoding = false;
// The objects written so far: V8 writes a second visit as a reference, so that is V8's turn.
const visited = [];
let visitedSet = null;
// A double's bytes in the host's order, as V8 writes them.
const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);

function reserve(n) {
  if (at + n <= scratch.length) return;
  const bigger = Buffer.allocUnsafe(Math.max(scratch.length * 2, at + n));
  scratch.copy(bigger, 0, 0, at);
  scratch = bigger;
}

function writeVarint(n) {
  while (n >= 0x80) {
    scratch[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  scratch[at++] = n;
}

function writeNumber(n) {
  reserve(10);
  if ((n | 0) === n && !Object.is(n, -0)) {
    scratch[at++] = INT32;
    writeVarint(((n << 1) ^ (n >> 31)) >>> 0);
    return;
  }
  scratch[at++] = DOUBLE;
  float[0] = n;
  for (let i = 0; i < 8; i++) scratch[at++] = floatBytes[i];
}

function writeString(s) {
  const n = s.length;
  if (n < SHORT_STRING) return writeShortString(s, n);
  reserve(2 * n + 8);
  // V8 answers this at once for a string it stores one byte per character, and scans only
  // strings stored two bytes per character (measuring the UTF-8 length cost as much as the copy).
  if (!BEYOND_LATIN1.test(s)) {
    scratch[at++] = ONE_BYTE_STRING;
    writeVarint(n);
    at += scratch.write(s, at, n, 'latin1');
    return;
  }
  writeTwoByteHeader(n);
  at += scratch.write(s, at, 2 * n, 'utf16le');
}

// Latin-1 as it goes; UTF-16 instead from the first character beyond. Lengths fit a varint byte.
function writeShortString(s, n) {
  reserve(2 * n + 3);
  const buf = scratch;
  let a = at;
  buf[a++] = ONE_BYTE_STRING;
  buf[a++] = n;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) return writeShortTwoByte(s, n);
    buf[a++] = c;
  }
  at = a;
}

function writeShortTwoByte(s, n) {
  writeTwoByteHeader(n);
  const buf = scratch;
  let a = at;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    buf[a++] = c & 0xff;
    buf[a++] = c >>> 8;
  }
  at = a;
}

// V8 pads so that the UTF-16 data starts at an even offset of the payload.
function writeTwoByteHeader(chars) {
  const bytes = 2 * chars;
  let varintSize = 1;
  for (let v = bytes; v >= 0x80; v >>>= 7) varintSize++;
  if ((at - PREFIX + 1 + varintSize) & 1) scratch[at++] = PADDING;
  scratch[at++] = TWO_BYTE_STRING;
  writeVarint(bytes);
}

// What V8 would write as a plain object or a dense array, and nothing else may hide behind.
function plainKind(value) {
  if (isProxy(value)) return null;
  const proto = Object.getPrototypeOf(value);
  if (proto === Array.prototype) return Array.isArray(value) ? 'array' : null;
  if (proto !== Object.prototype && proto !== null) return null;
  return isArgumentsObject(value) || isModuleNamespaceObject(value) ? null : 'object';
}

// Writes `value`; false (what is written then being useless) where V8 must do it.
function writeValue(value, depth) {
  switch (typeof value) {
    case 'string':
      writeString(value);
      return true;
    case 'number':
      writeNumber(value);
      return true;
    case 'boolean':
      reserve(1);
      scratch[at++] = value ? TRUE : FALSE;
      return true;
    case 'undefined':
      reserve(1);
      scratch[at++] = UNDEFINED;
      return true;
    case 'object':
      if (value === null) {
        reserve(1);
        scratch[at++] = NULL;
        return true;
      }
      return writeReceiver(value, depth);
    default:
      return false;
  }
}

// A scan while there are few, a set beyond.
function firstVisit(value) {
  if (visitedSet !== null) {
    if (visitedSet.has(value)) return false;
    visitedSet.add(value);
    return true;
  }
  if (visited.includes(value)) return false;
  visited.push(value);
  if (visited.length > 16) visitedSet = new Set(visited);
  return true;
}

function writeReceiver(value, depth) {
  if (depth >= MAX_DEPTH) return false;
  const kind = plainKind(value);
  if (kind === null || !firstVisit(value)) return false;
  const keys = Object.keys(value);
  if (kind === 'array') {
    const length = value.length;
    // Index keys come first, in order: all `length` of them and nothing else, or V8's turn.
    if (keys.length !== length || (length !== 0 && keys[length - 1] !== String(length - 1))) return false;
    reserve(6);
    scratch[at++] = BEGIN_DENSE_ARRAY;
    writeVarint(length);
    for (let i = 0; i < length; i++) {
      if (!writeValue(value[i], depth + 1)) return false;
    }
    reserve(11);
    scratch[at++] = END_DENSE_ARRAY;
    writeVarint(0);
    writeVarint(length);
    return true;
  }
  reserve(1);
  scratch[at++] = BEGIN_OBJECT;
  let written = 0;
  for (const key of keys) {
    const property = value[key];
    // As V8: a property a getter deleted meanwhile is skipped.
    if (property === undefined && !Object.hasOwn(value, key)) continue;
    writeString(key);
    if (!writeValue(property, depth + 1)) return false;
    written++;
  }
  reserve(6);
  scratch[at++] = END_OBJECT;
  writeVarint(written);
  return true;
}

// The last frame lent out of the scratch buffer.
let lent = null;

// The first `n` bytes of the scratch buffer: lent when large, else in a buffer of their own. A
// scratch buffer grown past the size kept is let go after this encode: the frame has it.
function frameOf(n) {
  if (n < LENT_FROM) return copyOut(n);
  if (scratch.length > SCRATCH_KEPT) return scratch.subarray(0, n);
  lent = scratch.subarray(0, n);
  return lent;
}

// Whether `frame` is lent: to be written before the next encode.
function isLent(frame) {
  return frame === lent;
}

// The first `n` bytes of the scratch buffer in a buffer of their own; a small copy is cheaper
// in JavaScript than through Buffer's native copy.
function copyOut(n) {
  const frame = Buffer.allocUnsafe(n);
  if (n > COPY_IN_JS) scratch.copy(frame, 0, 0, n);
  else for (let i = 0; i < n; i++) frame[i] = scratch[i];
  return frame;
}

// A whole frame (length prefix, header, value) for `message`, or undefined: V8's turn. A large
// frame is lent (see frameOf).
function encode(message) {
  // A getter sending a message of its own: V8 serializes that one.
  if (encoding) return undefined;
  encoding = true;
  try {
    at = PREFIX;
    reserve(2);
    scratch[at++] = HEADER;
    scratch[at++] = VERSION;
    if (!writeValue(message, 0)) return undefined;
    const size = at - PREFIX;
    scratch[0] = size >>> 24;
    scratch[1] = (size >>> 16) & 0xff;
    scratch[2] = (size >>> 8) & 0xff;
    scratch[3] = size & 0xff;
    return frameOf(at);
  } finally {
    encoding = false;
    if (scratch.length > SCRATCH_KEPT) scratch = Buffer.allocUnsafeSlow(SCRATCH);
    visited.length = 0;
    visitedSet = null;
  }
}

// Reading: `data` (the payload's bytes as a latin1 string, one character a byte) and `pos` while
// one payload is decoded (decoding runs no user code).
let data = null;
let pos = 0;

function fail() {
  throw NOT_PLAIN;
}

function byte() {
  if (pos >= data.length) fail();
  return data.charCodeAt(pos++);
}

function readVarint() {
  let value = 0;
  // A running scale, not `2 ** shift`: V8 compiles that to a call to pow().
  for (let scale = 1; scale < 2 ** 35; scale *= 128) {
    const b = byte();
    value += (b & 0x7f) * scale;
    if (b < 0x80) return value >>> 0;
  }
  return fail();
}

function tag() {
  while (pos < data.length && data.charCodeAt(pos) === PADDING) pos++;
  return byte();
}

function peekTag() {
  while (pos < data.length && data.charCodeAt(pos) === PADDING) pos++;
  return pos < data.length ? data.charCodeAt(pos) : fail();
}

function readBytes(n) {
  const start = pos;
  if (n > data.length - start) fail();
  pos += n;
  return start;
}

function readValue(depth) {
  switch (tag()) {
    case UNDEFINED:
      return undefined;
    case NULL:
      return null;
    case TRUE:
      return true;
    case FALSE:
      return false;
    case INT32: {
      const u = readVarint();
      return (u >>> 1) ^ -(u & 1);
    }
    case UINT32:
      return readVarint();
    case DOUBLE: {
      const start = readBytes(8);
      for (let i = 0; i < 8; i++) floatBytes[i] = data.charCodeAt(start + i);
      return float[0];
    }
    case ONE_BYTE_STRING:
      return readString('latin1', 1);
    case TWO_BYTE_STRING:
      return readString('utf16le', 2);
    case UTF8_STRING:
      return readString('utf8', 1);
    case BEGIN_OBJECT:
      return depth < MAX_DEPTH ? readObject(depth) : fail();
    case BEGIN_DENSE_ARRAY:
      return depth < MAX_DEPTH ? readDenseArray(depth) : fail();
    default:
      return fail();
  }
}

function readString(encoding, unit) {
  const length = readVarint();
  if (length % unit !== 0) fail();
  const start = readBytes(length);
  const bytes = data.slice(start, pos);
  return encoding === 'latin1' ? bytes : Buffer.from(bytes, 'latin1').toString(encoding);
}

function readObject(depth) {
  const object = {};
  let count = 0;
  while (peekTag() !== END_OBJECT) {
    const key = readValue(depth + 1);
    if (typeof key !== 'string' && typeof key !== 'number') fail();
    const value = readValue(depth + 1);
    // A data property of its own, as V8 defines it: never an inherited setter (__proto__) or a
    // frozen prototype's read-only property in the way.
    if (key in object) Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
    else object[key] = value;
    count++;
  }
  pos++;
  if (readVarint() !== count) fail();
  return object;
}

function readDenseArray(depth) {
  const length = readVarint();
  // Every element takes at least a byte: a longer claim is not ours to allocate for.
  if (length > data.length - pos) fail();
  const array = new Array(length);
  for (let i = 0; i < length; i++) {
    if (peekTag() === HOLE) pos++;
    else array[i] = readValue(depth + 1);
  }
  if (tag() !== END_DENSE_ARRAY || readVarint() !== 0 || readVarint() !== length) fail();
  return array;
}

// The value of one payload (header + value, its bytes as a latin1 string), or NOT_PLAIN: V8's
// turn.
function decode(payload) {
  data = payload;
  pos = 0;
  try {
    if (byte() !== HEADER || byte() !== VERSION) return NOT_PLAIN;
    const value = readValue(0);
    return pos === data.length ? value : NOT_PLAIN;
  } catch (error) {
    if (error === NOT_PLAIN) return NOT_PLAIN;
    throw error;
  } finally {
    data = null;
  }
}

module.exports = { encode, isLent, decode, NOT_PLAIN };
