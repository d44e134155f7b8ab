'use strict';
// Handles (fds) across the channel: what an outgoing handle is and which fd it holds, and the
// Node object an incoming fd becomes. The envelope and its `type` strings are Node's own, so a
// stock Node peer sends and receives them unchanged.
const EventEmitter = require('events');
const net = require('net');
const dgram = require('dgram');
const { errors } = require('./errors');

// dgram keeps its handle behind a private symbol; `_handle` is a deprecated getter that warns.
function dgramHandle(socket) {
  const state = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
  return state && socket[state]?.handle;
}

function fdOf(handle) {
  const fd = handle?.fd;
  return Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

// `{ type, fd, fields }` for a handle Node can send, where `fields` go into the envelope.
// Throws ERR_INVALID_HANDLE_TYPE for anything else, as Node does.
function describeOutgoing(handle) {
  let type;
  let fd;
  const fields = {};
  if (handle instanceof net.Socket) {
    type = 'net.Socket';
    fd = fdOf(handle._handle);
    if (handle.server?._connectionKey) fields.key = handle.server._connectionKey;
  } else if (handle instanceof net.Server) {
    type = 'net.Server';
    fd = fdOf(handle._handle);
  } else if (handle instanceof dgram.Socket) {
    type = 'dgram.Socket';
    fd = fdOf(dgramHandle(handle));
    fields.dgramType = handle.type;
  } else if (['TCP', 'Pipe'].includes(handle?.constructor?.name) && fdOf(handle) !== undefined) {
    type = 'net.Native';
    fd = fdOf(handle);
  } else if (handle?.constructor?.name === 'UDP' && fdOf(handle) !== undefined) {
    type = 'dgram.Native';
    fd = fdOf(handle);
  } else {
    throw errors.ERR_INVALID_HANDLE_TYPE();
  }
  return { type, fd, fields };
}

// Builds the Node object for a received fd and passes it to `done` once usable: a server once
// it listens, a dgram socket once bound (Node emits the message after that too).
function adoptIncoming(envelope, fd, done) {
  switch (envelope.type) {
    case 'net.Server': {
      const server = net.createServer();
      server.listen({ fd }, () => done(server));
      return;
    }
    case 'dgram.Socket': {
      const socket = dgram.createSocket(envelope.dgramType === 'udp6' ? 'udp6' : 'udp4');
      socket.bind({ fd }, () => done(socket));
      return;
    }
    default:
      done(new net.Socket({ fd, readable: true, writable: true }));
  }
}

// Sockets received with a `key` (they came from a server in the peer). The peer's server asks
// how many are still open (`getConnections()`) and waits for all of them to close before its
// `close()` completes; Node's receiving side answers, so we do too.
class ReceivedSockets {
  constructor(reply) {
    this._reply = reply;
    this._open = new Map();
    this._closeWaiters = new Map();
  }

  track(key, socket) {
    this._open.set(key, (this._open.get(key) ?? 0) + 1);
    socket.once('close', () => {
      const left = this._open.get(key) - 1;
      this._open.set(key, left);
      if (left === 0 && this._closeWaiters.delete(key)) this._reply({ cmd: 'NODE_SOCKET_ALL_CLOSED', key });
    });
  }

  answer(message) {
    const { cmd, key } = message;
    if (cmd === 'NODE_SOCKET_GET_COUNT') {
      this._reply({ cmd: 'NODE_SOCKET_COUNT', key, count: this._open.get(key) ?? 0 });
    } else if (cmd === 'NODE_SOCKET_NOTIFY_CLOSE') {
      if (!this._open.get(key)) this._reply({ cmd: 'NODE_SOCKET_ALL_CLOSED', key });
      else this._closeWaiters.set(key, true);
    }
  }
}

// The sending side of the same bookkeeping: sockets sent from one server through one channel.
// The server (`_setupWorker`) counts them through this list from then on: `getConnections()` asks
// the receiver how many are still open, and `close()` waits for the receiver to close them all.
class SentSockets extends EventEmitter {
  constructor(channel, key) {
    super();
    this.key = key;
    this._channel = channel;
    channel.once('exit', () => this.emit('exit', this));
  }

  getConnections(callback) {
    this._ask('NODE_SOCKET_GET_COUNT', 'NODE_SOCKET_COUNT', false, (err, reply) => callback(err, reply?.count));
  }

  close(callback) {
    this._ask('NODE_SOCKET_NOTIFY_CLOSE', 'NODE_SOCKET_ALL_CLOSED', true, callback);
  }

  // Sends `cmd` and calls back with the peer's `answer` for this key, or an error if the channel
  // closes first. A failed send is the channel's 'error' unless `quiet`.
  _ask(cmd, answer, quiet, callback) {
    const channel = this._channel;
    const onReply = (message) => {
      if (message.cmd !== answer || message.key !== this.key) return;
      channel.removeListener('internalMessage', onReply);
      channel.removeListener('disconnect', onClose);
      callback(null, message);
    };
    const onClose = () => {
      channel.removeListener('internalMessage', onReply);
      callback(errors.ERR_CHILD_CLOSED_BEFORE_REPLY());
    };
    if (!channel.connected) return onClose();
    channel.send({ cmd, key: this.key }, ...(quiet ? [() => {}] : []));
    channel.on('internalMessage', onReply);
    channel.once('disconnect', onClose);
  }
}

module.exports = { describeOutgoing, adoptIncoming, ReceivedSockets, SentSockets };
