'use strict';
// The two wire formats of Node's IPC channel, as Node's own child_process writes and reads them.
// 'json': JSON.stringify + '\n'. 'advanced': 4-byte big-endian length, then V8 serialization in
// which every ArrayBufferView is a host object (tag 0) and other host objects are copied (tag 1).
const v8 = require('v8');
const { binding } = require('./native');
const { errors } = require('./errors');

const MODES = Object.values(binding.Serialization);

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

const json = {
  // One frame; throws synchronously (circular structure, BigInt) as Node's send() does.
  encode(message) {
    return `${JSON.stringify(message)}\n`;
  },
  join(frames) {
    return frames.join('');
  },
  size(frame) {
    return frame.length;
  },
  // `text` holds whole lines back to back, line i ending at `ends[i]` (the core split them; no
  // `ends` means one line). Appends each parsed message to `out`, or what `failed(error, raw)`
  // makes of a line that does not parse.
  decode(text, ends, out, failed) {
    if (ends === undefined) ends = [text.length];
    let start = 0;
    for (const end of ends) {
      const line = text.slice(start, end);
      start = end;
      try {
        out.push(JSON.parse(line));
      } catch (error) {
        out.push(failed(error, line));
      }
    }
  },
  decodeOne(text) {
    return JSON.parse(text);
  },
};

const advanced = {
  encode(message) {
    const ser = new Serializer();
    ser.writeHeader();
    ser.writeValue(message);
    const payload = ser.releaseBuffer();
    const frame = Buffer.allocUnsafe(4 + payload.length);
    frame.writeUInt32BE(payload.length, 0);
    payload.copy(frame, 4);
    return frame;
  },
  join(frames) {
    return frames.length === 1 ? frames[0] : Buffer.concat(frames);
  },
  size(frame) {
    return frame.length;
  },
  // `data` holds V8 payloads back to back, payload i ending at `ends[i]` (no `ends`: one payload).
  decode(data, ends, out, failed) {
    if (ends === undefined) ends = [data.length];
    let start = 0;
    for (const end of ends) {
      const payload = data.subarray(start, end);
      start = end;
      try {
        out.push(advanced.decodeOne(payload));
      } catch (error) {
        out.push(failed(error, payload));
      }
    }
  },
  decodeOne(payload) {
    const des = new Deserializer(payload);
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
