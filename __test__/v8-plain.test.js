'use strict';
// The JavaScript writer and reader of V8's format for plain values (lib/v8-plain.js): what it
// writes, V8 reads back as the same value, and the reverse; whatever it does not cover is left
// to V8 untouched. The last test sends such values to a stock Node child and back, and so also
// runs against Node's built-ins (RC_REFERENCE=node).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const v8 = require('node:v8');
const { inspect } = require('node:util');

const plain = require('../lib/v8-plain');
const { advanced } = require('../lib/serialization');
const impl = require('./helpers/impl');
const { once } = require('./helpers/wait');

const byV8 = (value) => advanced.encodeByV8(value).subarray(4);
// Our reader, given a payload's bytes as the core hands them to JavaScript.
const read = (bytes) => plain.decode(bytes.toString('latin1'));
// The spec: what V8 itself makes of a value sent and received (a null prototype is not kept).
const throughV8 = (value) => advanced.decodeByV8(byV8(value));
const payload = (frame) => {
  assert.equal(frame.readUInt32BE(0), frame.length - 4, 'the length prefix is the payload size');
  return frame.subarray(4);
};

const long = 'abcdefghijklmnopqrstuvwxyz'.repeat(3000);
const PLAIN = [
  null, undefined, true, false, 0, -0, 1, -1, 63, 64, -65, 2 ** 31 - 1, -(2 ** 31), 2 ** 31, 2 ** 53, 0.5, -1e-300,
  NaN, Infinity, -Infinity, '', 'a', 'latin1 é ÿ', '日本', 'a\ud800b', '\u{1f600}', long, `${long}é`, `${long}日本`,
  // Latin-1 only, but likely stored two bytes per character; then more than the scratch buffer keeps.
  `日${long}`.slice(1), 'y'.repeat(3 << 20),
  {}, { a: 1 }, { s: 'x'.repeat(200) }, { nested: { deeper: { deepest: [1, 'two', null] } } },
  { 1: 'a', 0: 'b', z: 'c', 4294967295: 'd' }, { toString: 1, constructor: 'c', hasOwnProperty: null },
  [], [1, 2, 3], [[], [[]], {}], ['x', { y: [undefined, null] }], Array.from({ length: 300 }, (_, i) => ({ i })),
  Object.assign(Object.create(null), { bare: true }), JSON.parse('{"__proto__": {"polluted": true}, "k": 1}'),
];

class Point {
  constructor() {
    this.x = 1;
  }
}
const shared = { s: 1 };
const cyclic = {};
cyclic.self = cyclic;
const holey = [1, , 3]; // eslint-disable-line no-sparse-arrays
const extra = Object.assign([1, 2], { tag: 'x' });
let deep = {};
for (let i = 0; i < 200; i++) deep = { deep };
const NOT_PLAIN = {
  date: new Date(0),
  map: new Map([[1, 2]]),
  set: new Set([1]),
  buffer: Buffer.from('ab'),
  typed: new Float64Array([1]),
  bigint: 1n,
  boxed: Object(1),
  error: new Error('e'),
  regexp: /x/g,
  instance: new Point(),
  shared: { a: shared, b: shared },
  cyclic,
  holey,
  extra,
  proxy: new Proxy({}, {}),
  arguments: (function () {
    return arguments;
  })(1, 2),
  deep,
};

test('what it writes, V8 reads back as the value; what V8 writes, it reads back', () => {
  for (const value of PLAIN) {
    const ours = payload(plain.encode(value));
    const expected = throughV8(value);
    assert.deepStrictEqual(advanced.decodeByV8(ours), expected, `V8 reading ours: ${inspect(value).slice(0, 40)}`);
    assert.deepStrictEqual(read(byV8(value)), expected, `ours reading V8's: ${inspect(value).slice(0, 40)}`);
    assert.deepStrictEqual(read(ours), expected);
  }
});

test("where V8's representation is fixed, the bytes are V8's, two-byte padding included", () => {
  for (const value of [{ ab: '日本' }, { a: '日本' }, ['日本', 'x', '本'], { s: 'ascii', i: -7, f: 0.25, n: null }]) {
    assert.deepEqual(payload(plain.encode(value)), byV8(value), JSON.stringify(value));
  }
});

test('what it does not cover is left to V8, and so to V8 is all of a message holding it', () => {
  for (const [name, value] of Object.entries(NOT_PLAIN)) {
    assert.equal(plain.encode(value), undefined, name);
    assert.equal(plain.encode({ inside: [value] }), undefined, `${name}, nested`);
    // A class instance is a plain object on the wire; V8 refuses proxies and arguments objects.
    if (name === 'instance' || name === 'proxy' || name === 'arguments') continue;
    assert.equal(read(byV8({ inside: value })), plain.NOT_PLAIN, `${name}, read`);
  }
  for (const value of [() => {}, Symbol('s')]) assert.equal(plain.encode({ value }), undefined);
  // V8 still refuses them, as Node's send() does.
  assert.throws(() => advanced.encode({ f() {} }), { message: 'f() {} could not be cloned.' });
});

test('a damaged payload is left to V8, never misread', () => {
  const good = byV8({ list: [1, 2, 3], s: 'text' });
  for (let end = 0; end < good.length; end++) assert.equal(read(good.subarray(0, end)), plain.NOT_PLAIN, `cut at ${end}`);
  const longer = Buffer.concat([good, Buffer.from([0x30])]);
  assert.equal(read(longer), plain.NOT_PLAIN, 'trailing bytes');
  // An array claiming more elements than there are bytes allocates nothing.
  assert.equal(read(Buffer.from([0xff, good[1], 0x41, 0xff, 0xff, 0xff, 0xff, 0x0f])), plain.NOT_PLAIN);
});

test('keys are own data properties: __proto__ and Object.prototype names do not reach the prototype', () => {
  const value = read(byV8(JSON.parse('{"__proto__": {"x": 1}, "toString": 2}')));
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.deepEqual(Object.keys(value), ['__proto__', 'toString']);
  assert.equal({}.x, undefined);
});

test('a getter that sends while its message is written is written by V8, and the outer one is whole', () => {
  let inner;
  const value = {
    get g() {
      inner = plain.encode({ x: 1 });
      return 'g';
    },
  };
  assert.deepStrictEqual(advanced.decodeByV8(payload(plain.encode(value))), { g: 'g' });
  assert.equal(inner, undefined);
});

test('random plain values go both ways', () => {
  let seed = 7;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const pick = (depth) => {
    const r = random();
    if (depth > 3 || r < 0.3) return PLAIN[Math.floor(random() * 29)];
    if (r < 0.5) return Array.from({ length: Math.floor(random() * 5) }, () => pick(depth + 1));
    const object = {};
    for (let i = Math.floor(random() * 5); i > 0; i--) object[String.fromCharCode(97 + Math.floor(random() * 26)) + i] = pick(depth + 1);
    return object;
  };
  for (let i = 0; i < 500; i++) {
    const value = pick(0);
    const expected = throughV8(value);
    assert.deepStrictEqual(advanced.decodeByV8(payload(plain.encode(value))), expected);
    assert.deepStrictEqual(read(byV8(value)), expected);
  }
  assert.equal(v8.serialize(null)[1], byV8(null)[1], "the header is the running V8's");
});

test("plain values reach a stock child in 'advanced' mode and come back the same", async (t) => {
  const child = impl.child_process.fork(path.join(__dirname, 'fixtures', 'runtime', 'echo.js'), [], { serialization: 'advanced' });
  t.after(() => child.kill());
  for (const value of PLAIN.filter((v) => v !== null && v !== undefined)) {
    const reply = once(child, 'message');
    child.send(value);
    assert.deepStrictEqual((await reply)[0], throughV8(value));
  }
});

test("large messages sent in one tick in 'advanced' mode each arrive as they were sent", async (t) => {
  const child = impl.child_process.fork(path.join(__dirname, 'fixtures', 'runtime', 'echo.js'), [], { serialization: 'advanced' });
  t.after(() => child.kill());
  // Sizes that wait in the tick's batch (20 KB), that are written at once (70 KB), each encoded
  // into the same scratch memory as the next, and one past the scratch memory kept (1.5 MB).
  const sizes = [20_000, 20_000, 70_000, 70_000, 20_000, 1_500_000, 70_000, 20_000];
  const sent = sizes.map((size, k) => ({ k, s: String.fromCharCode(97 + k).repeat(size) }));
  const replies = [];
  const all = new Promise((resolve) => child.on('message', (m) => replies.push(m) === sent.length && resolve()));
  for (const message of sent) child.send(message);
  await all;
  assert.deepStrictEqual(replies.map((m) => [m.k, m.s.length, m.s === sent[m.k].s]), sent.map((m) => [m.k, m.s.length, true]));
});
