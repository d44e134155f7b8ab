'use strict';
// The two wire formats of Node's IPC channel, as Node's own child_process writes and reads them.
// 'json': JSON.stringify + '\n'. 'advanced': 4-byte big-endian length, then V8 serialization in
// which every ArrayBufferView is a host object (tag 0) and other host objects are copied (tag 1).
const v8 = require('v8');
const plain = require('./v8-plain');
const { binding } = require('./native');
const { errors } = require('./errors');

const MODES = Object.values(binding.Serialization);

// Payloads up to this size are read in JavaScript (lib/v8-plain.js) when plain, larger ones by V8.
const PLAIN_MOST = 64 * 1024;

const ARRAY_BUFFER_VIEW = 0;
const NOT_ARRAY_BUFFER_VIEW = 1;

class Serializer extends v8.DefaultSerializer {
  _writeHostObject(object) {
    if (ArrayBuffer.isView(object)) {
      this.writeUint32(ARRAY_BUFFER_VIEW);
      return super._writeHostObject(object);
    }
    this.writeUint32(NOT_ARRAY_BUFFER_VIEW);
    this.writeValue({ ...object });
  }
}

class Deserializer extends v8.DefaultDeserializer {
  _readHostObject() {
    if (this.readUint32() === ARRAY_BUFFER_VIEW) return super._readHostObject();
    return this.readValue();
  }
}

// Frames as the core hands them over: back to back in `data` (a string or a Buffer), frame i
// ending at `ends[i]` (no `ends`: one frame). Appends each decoded message to `out`, or what
// `failed(error, raw)` makes of a frame that does not decode.
function decodeFrames(data, ends, codec, out, failed) {
  if (ends === undefined || ends === null) return decodeFrame(data, codec, out, failed);
  let start = 0;
  for (const end of ends) {
    decodeFrame(typeof data === 'string' ? data.slice(start, end) : data.subarray(start, end), codec, out, failed);
    start = end;
  }
}

function decodeFrame(frame, codec, out, failed) {
  try {
    out.push(codec.decodeOne(frame));
  } catch (error) {
    out.push(failed(error, codec.raw(frame)));
  }
}

const json = {
  // One frame; throws synchronously (circular structure, BigInt) as Node's send() does.
  encode(message) {
    return `${JSON.stringify(message)}\n`;
  },
  lent() {
    return false;
  },
  join(frames) {
    return frames.length === 1 ? frames[0] : frames.join('');
  },
  size(frame) {
    return frame.length;
  },
  // `text` holds whole lines back to back (see decodeFrames).
  decode(text, ends, out, failed) {
    decodeFrames(text, ends, json, out, failed);
  },
  decodeOne(text) {
    return JSON.parse(text);
  },
  // A frame as an error shows it.
  raw(text) {
    return text;
  },
};

const advanced = {
  encode(message) {
    return plain.encode(message) ?? advanced.encodeByV8(message);
  },
  encodeByV8(message) {
    const ser = new Serializer();
    ser.writeHeader();
    ser.writeValue(message);
    const payload = ser.releaseBuffer();
    const frame = Buffer.allocUnsafe(4 + payload.length);
    frame.writeUInt32BE(payload.length, 0);
    payload.copy(frame, 4);
    return frame;
  },
  // A lent frame is valid until the next encode: it is written at once.
  lent(frame) {
    return plain.isLent(frame);
  },
  join(frames) {
    return frames.length === 1 ? frames[0] : Buffer.concat(frames);
  },
  size(frame) {
    return frame.length;
  },
  // `data` holds V8 payloads back to back (see decodeFrames): a latin1 string, one character a
  // byte, or a Buffer when large.
  decode(data, ends, out, failed) {
    decodeFrames(data, ends, advanced, out, failed);
  },
  // A payload as the core hands it over: a latin1 string, or a view of a large batch's Buffer.
  decodeOne(payload) {
    let text = payload;
    if (typeof payload !== 'string') {
      // A large message goes to V8 as it is: reading it here would first copy it whole into a
      // string, which V8's reader (its cost per message negligible at that size) does without.
      if (payload.length > PLAIN_MOST) return advanced.decodeByV8(payload);
      text = payload.toString('latin1');
    }
    const value = plain.decode(text);
    return value === plain.NOT_PLAIN ? advanced.decodeByV8(payload) : value;
  },
  // A payload's bytes, as V8's Deserializer and an error show them.
  raw(payload) {
    return typeof payload === 'string' ? Buffer.from(payload, 'latin1') : payload;
  },
  decodeByV8(payload) {
    const des = new Deserializer(advanced.raw(payload));
    des.readHeader();
    return des.readValue();
  },
};

// Node's check on `options.serialization`.
function validate(mode, name = 'options.serialization') {
  if (mode !== undefined && !MODES.includes(mode)) {
    throw errors.ERR_INVALID_ARG_VALUE(name, mode, `must be one of: ${MODES.map((m) => `'${m}'`).join(', ')}`);
  }
}

module.exports = { json, advanced, validate };
