//! The primary's half of Node's `NODE_CLUSTER` protocol, answered without JavaScript.
//!
//! Workers run Node's own worker code; they ask for listening sockets (`queryServer`), report
//! `online`/`listening`, release servers (`close`) and confirm `newconn` hand-offs. Policies:
//! round-robin keeps the listening socket here and hands each accepted connection to the least
//! busy worker (a few `newconn`s outstanding per worker, where Node allows one); shared sends every worker the same
//! bound socket; reuseport gives each worker its own SO_REUSEPORT socket so the kernel balances.
//! JavaScript only hears what it must emit: online, listening, exitedAfterDisconnect.
//!
//! Reuseport's known hazard is that closing a listening socket resets the connections still in
//! its backlog. We keep a copy of every worker's socket, so a worker's exit closes nothing: its
//! socket becomes an orphan that the primary drains, handing its connections to the other
//! workers like round-robin, until a new worker takes the socket over.

use crate::lock::lock;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use once_cell::sync::Lazy;
use serde_json::{json, Map, Value};

use crate::channel::{self, Channel};
use crate::events::{self, Event};
use crate::listener;

pub const SCHED_NONE: u32 = 1;
pub const SCHED_RR: u32 = 2;
pub const SCHED_REUSEPORT: u32 = 3;

static POLICY: AtomicU32 = AtomicU32::new(SCHED_RR);
/// The primary's message counter, shared by all workers as in Node.
static SEQ: AtomicU64 = AtomicU64::new(0);
static STATE: Lazy<Mutex<State>> = Lazy::new(Default::default);

pub fn set_policy(policy: u32) {
  POLICY.store(policy, Ordering::Relaxed);
}

#[derive(Default)]
struct State {
  handles: HashMap<String, Handle>,
  /// Listener id → key of the handle whose connections it accepts.
  listeners: HashMap<u32, String>,
  /// Channels whose worker asked to exit after disconnect: their queries go unanswered.
  leaving: HashSet<u32>,
}

struct Handle {
  data: Value,
  /// The socket file of a unix-path handle.
  path: Option<String>,
  workers: HashSet<u32>,
  kind: Kind,
  /// Listening sockets the primary accepts on for this handle (the listener registry owns them).
  listeners: Vec<u32>,
  dispatch: Dispatch,
}

enum Kind {
  /// One bound socket, sent to every worker (SCHED_NONE, and UDP under any policy).
  Shared { fd: OwnedFd, dgram: bool },
  ReusePort(ReusePort),
  RoundRobin { sockname: Option<Value> },
}

struct ReusePort {
  /// The query, to bind every worker's socket alike (with the port fixed by the first bind).
  query: Value,
  /// Each worker's socket, kept so that its exit does not reset the backlog.
  owned: HashMap<u32, Arc<OwnedFd>>,
  /// Sockets whose worker is gone, with the listener that drains them.
  orphans: Vec<(u32, Arc<OwnedFd>)>,
}

/// Connections the primary accepted, on their way to workers.
#[derive(Default)]
struct Dispatch {
  /// Workers in rotation order, each with its count of unanswered `newconn`s.
  workers: Vec<(u32, usize)>,
  /// Where the rotation resumes.
  next: usize,
  pending: VecDeque<Arc<OwnedFd>>,
  /// Our `newconn` seq → the worker it went to and the connection, until the worker answers.
  outstanding: HashMap<u64, (u32, Arc<OwnedFd>)>,
}

/// Unanswered `newconn`s per worker. Node allows one, so a worker idles for a round trip
/// between connections; a few in flight keep it fed while the least busy worker still gets
/// each new one.
const NEWCONN_DEPTH: usize = 4;

fn next_seq() -> u64 {
  SEQ.fetch_add(1, Ordering::Relaxed)
}

fn send(channel: &Channel, mut message: Map<String, Value>, fd: Option<Arc<OwnedFd>>, native: &str) {
  message.insert("cmd".into(), "NODE_CLUSTER".into());
  message.insert("seq".into(), next_seq().into());
  let value = match fd {
    Some(_) => json!({ "cmd": "NODE_HANDLE", "type": native, "msg": message }),
    None => Value::Object(message),
  };
  // A failed write means the worker is gone; its disconnect cleans up.
  let _ = channel.send_value(&value, fd);
}

fn send_to(id: u32, message: Map<String, Value>, fd: Option<Arc<OwnedFd>>, native: &str) {
  if let Some(channel) = channel::get(id) {
    send(&channel, message, fd, native);
  }
}

fn object(value: Value) -> Map<String, Value> {
  match value {
    Value::Object(map) => map,
    _ => Map::new(),
  }
}

pub fn on_message(channel: &Channel, message: Value) {
  let act = message.get("act").and_then(Value::as_str).unwrap_or("");
  match act {
    "online" | "listening" => notify(channel.id, &message),
    "queryServer" => query_server(channel, &message),
    "close" => {
      if let Some(key) = message.get("key").and_then(Value::as_str) {
        let mut state = lock(&STATE);
        remove_worker(&mut state, key, channel.id);
      }
    }
    "exitedAfterDisconnect" => {
      lock(&STATE).leaving.insert(channel.id);
      notify(channel.id, &message);
      send(channel, object(json!({ "ack": message.get("seq") })), None, "");
    }
    "" => {
      if let (Some(ack), Some(accepted)) = (message.get("ack").and_then(Value::as_u64), message.get("accepted")) {
        newconn_answered(channel.id, ack, accepted.as_bool().unwrap_or(false));
      }
    }
    _ => {}
  }
}

fn notify(id: u32, message: &Value) {
  events::push(Event::Cluster { id, json: message.to_string() });
}

/// Node's primary builds the key with JavaScript string conversion; the worker echoes it back.
fn js_string(value: Option<&Value>) -> String {
  match value {
    None => "undefined".into(),
    Some(Value::String(s)) => s.clone(),
    Some(other) => other.to_string(),
  }
}

fn query_server(channel: &Channel, message: &Value) {
  let get = |name: &str| message.get(name);
  let key = ["address", "port", "addressType", "fd", "index"].map(|f| js_string(get(f))).join(":");
  let seq = get("seq").cloned().unwrap_or(Value::Null);
  let mut guard = lock(&STATE);
  let state = &mut *guard;
  if state.leaving.contains(&channel.id) {
    return;
  }
  if !state.handles.contains_key(&key) {
    match create_handle(message) {
      Ok(handle) => {
        for &listener in &handle.listeners {
          state.listeners.insert(listener, key.clone());
        }
        state.handles.insert(key.clone(), handle);
      }
      Err(errno) => {
        let reply = object(json!({ "errno": -(errno as i32), "key": key, "ack": seq, "data": Value::Null }));
        return send(channel, reply, None, "");
      }
    }
  }
  let handle = state.handles.get_mut(&key).expect("inserted above");
  if handle.data.is_null() {
    handle.data = get("data").cloned().unwrap_or(Value::Null);
  }
  handle.workers.insert(channel.id);
  let mut reply = object(json!({ "errno": 0, "key": key, "ack": seq, "data": handle.data }));
  match &mut handle.kind {
    Kind::Shared { fd, dgram } => match fd.try_clone() {
      Ok(copy) => send(channel, reply, Some(Arc::new(copy)), if *dgram { "dgram.Native" } else { "net.Native" }),
      Err(e) => send(channel, errno_reply(reply, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))), None, ""),
    },
    Kind::ReusePort(reuse) => {
      let socket = match reuse.orphans.pop() {
        Some((listener, fd)) => {
          listener::unwatch(listener);
          handle.listeners.retain(|&l| l != listener);
          state.listeners.remove(&listener);
          Ok(fd)
        }
        None => bind_for(&reuse.query, true).map(|(fd, _)| Arc::new(fd)),
      };
      match socket {
        Ok(fd) => {
          reuse.owned.insert(channel.id, fd.clone());
          send(channel, reply, Some(fd), "net.Native");
          handle.dispatch.join(channel.id);
          handle.dispatch.distribute(&key);
        }
        Err(errno) => send(channel, errno_reply(reply, errno), None, ""),
      }
    }
    Kind::RoundRobin { sockname } => {
      reply.insert("errno".into(), Value::Null);
      if let Some(sockname) = sockname {
        reply.insert("sockname".into(), sockname.clone());
      }
      send(channel, reply, None, "");
      handle.dispatch.join(channel.id);
      handle.dispatch.distribute(&key);
    }
  }
}

fn errno_reply(mut reply: Map<String, Value>, errno: Errno) -> Map<String, Value> {
  reply.insert("errno".into(), json!(-(errno as i32)));
  reply
}

fn create_handle(message: &Value) -> Result<Handle, Errno> {
  let address_type = message.get("addressType");
  let dgram = matches!(address_type.and_then(Value::as_str), Some("udp4" | "udp6"));
  let policy = POLICY.load(Ordering::Relaxed);
  let mut listeners = Vec::new();
  let kind = if dgram || policy == SCHED_NONE {
    Kind::Shared { fd: bind_for(message, false)?.0, dgram }
  } else if policy == SCHED_REUSEPORT && is_tcp(message) {
    // Bind once now so that `listen(0)` fixes the one port every worker's socket then shares.
    let (_, port) = bind_for(message, true)?;
    let mut query = message.clone();
    query["port"] = json!(port);
    Kind::ReusePort(ReusePort { query, owned: HashMap::new(), orphans: Vec::new() })
  } else {
    let (fd, _) = bind_for(message, false)?;
    listener::listen(&fd, backlog(message))?;
    let sockname = listener::sockname(fd.as_raw_fd());
    listeners.push(listener::watch(Arc::new(fd))?);
    Kind::RoundRobin { sockname }
  };
  let path = if message.get("port").and_then(Value::as_i64).is_some_and(|p| p < 0) {
    message.get("address").and_then(Value::as_str).map(str::to_owned)
  } else {
    None
  };
  Ok(Handle { data: Value::Null, path, workers: HashSet::new(), kind, listeners, dispatch: Dispatch::default() })
}

/// A falsy backlog means Node's default.
fn backlog(message: &Value) -> i32 {
  message.get("backlog").and_then(Value::as_i64).filter(|&b| b > 0).unwrap_or(511) as i32
}

fn is_tcp(message: &Value) -> bool {
  matches!(message.get("addressType").and_then(Value::as_i64), Some(4 | 6))
}

/// Binds the socket a worker's query describes; returns it with its bound port (0 for pipes).
fn bind_for(message: &Value, reuse_port: bool) -> Result<(OwnedFd, u16), Errno> {
  let address = message.get("address").and_then(Value::as_str);
  let port = message.get("port").and_then(Value::as_i64).unwrap_or(0);
  let flags = message.get("flags").and_then(Value::as_i64).unwrap_or(0);
  let ip = |text: &str| text.parse::<IpAddr>().map_err(|_| Errno::EINVAL);
  let fd = match message.get("addressType") {
    Some(Value::String(family)) => {
      let default = if family == "udp6" { "::" } else { "0.0.0.0" };
      listener::bind_udp(ip(address.unwrap_or(default))?, port as u16, flags & 1 != 0, flags & 4 != 0)?
    }
    _ if port < 0 => {
      let path = address.ok_or(Errno::EINVAL)?;
      let flag = |name: &str| message.get(name).and_then(Value::as_bool).unwrap_or(false);
      listener::bind_pipe(path, flag("readableAll"), flag("writableAll"))?
    }
    _ => {
      let ip = address.map(ip).transpose()?;
      listener::bind_tcp(&listener::Tcp { ip, port: port as u16, ipv6_only: flags & 1 != 0, reuse_port })?
    }
  };
  let bound = listener::sockname(fd.as_raw_fd()).and_then(|s| s["port"].as_u64()).unwrap_or(0);
  Ok((fd, bound as u16))
}

impl Dispatch {
  fn join(&mut self, worker: u32) {
    if !self.workers.iter().any(|&(w, _)| w == worker) {
      self.workers.push((worker, 0));
    }
  }

  /// The least busy worker with room, the rotation breaking ties.
  fn pick(&self) -> Option<usize> {
    let n = self.workers.len();
    (0..n).map(|i| (self.next + i) % n).filter(|&i| self.workers[i].1 < NEWCONN_DEPTH).min_by_key(|&i| self.workers[i].1)
  }

  /// Hands queued connections to workers with room.
  fn distribute(&mut self, key: &str) {
    while !self.pending.is_empty() {
      let Some(i) = self.pick() else { return };
      let worker = self.workers[i].0;
      let conn = self.pending.pop_front().expect("checked non-empty");
      let seq = next_seq();
      let message = json!({ "cmd": "NODE_CLUSTER", "act": "newconn", "key": key, "seq": seq });
      let envelope = json!({ "cmd": "NODE_HANDLE", "type": "net.Native", "msg": message });
      match channel::get(worker).ok_or(Errno::EPIPE).and_then(|channel| channel.send_value(&envelope, Some(conn.clone()))) {
        Ok(_) => {
          self.workers[i].1 += 1;
          self.next = i + 1;
          self.outstanding.insert(seq, (worker, conn));
        }
        // The worker's channel just closed: out of the rotation now, before its disconnect says so.
        Err(_) => {
          self.pending.push_front(conn);
          self.remove(worker);
        }
      }
    }
  }

  /// Takes `worker` out of the rotation; what it had not confirmed goes to the others.
  fn remove(&mut self, worker: u32) {
    self.workers.retain(|&(w, _)| w != worker);
    let lost: Vec<u64> = self.outstanding.iter().filter(|(_, (w, _))| *w == worker).map(|(seq, _)| *seq).collect();
    for seq in lost {
      let (_, conn) = self.outstanding.remove(&seq).expect("listed above");
      self.pending.push_front(conn);
    }
  }
}

pub fn on_connections(listener: u32, conns: Vec<OwnedFd>) {
  let mut state = lock(&STATE);
  let Some(key) = state.listeners.get(&listener).cloned() else { return };
  if let Some(handle) = state.handles.get_mut(&key) {
    handle.dispatch.pending.extend(conns.into_iter().map(Arc::new));
    handle.dispatch.distribute(&key);
  }
}

fn newconn_answered(worker: u32, ack: u64, accepted: bool) {
  let mut state = lock(&STATE);
  for (key, handle) in state.handles.iter_mut() {
    let dispatch = &mut handle.dispatch;
    match dispatch.outstanding.get(&ack) {
      Some((owner, _)) if *owner == worker => {}
      _ => continue,
    }
    let (_, conn) = dispatch.outstanding.remove(&ack).expect("checked above");
    // Accepted: the worker has its copy and ours closes when `conn` drops. Refused: try another.
    if !accepted {
      dispatch.pending.push_front(conn);
    }
    if let Some(entry) = dispatch.workers.iter_mut().find(|(w, _)| *w == worker) {
      entry.1 -= 1;
    }
    dispatch.distribute(key);
    return;
  }
}

/// The worker on channel `id` is gone: out of every rotation, its unanswered connections requeued.
pub fn on_disconnect(id: u32) {
  let mut state = lock(&STATE);
  state.leaving.remove(&id);
  for key in handles_of(&state, id) {
    remove_worker(&mut state, &key, id);
  }
}

/// Primary-side `worker.disconnect()`: queries stop being answered and the worker's handles go.
pub fn disconnect(id: u32) {
  let keys = {
    let mut state = lock(&STATE);
    state.leaving.insert(id);
    handles_of(&state, id)
  };
  send_to(id, object(json!({ "act": "disconnect" })), None, "");
  let mut state = lock(&STATE);
  for key in keys {
    remove_worker(&mut state, &key, id);
  }
}

fn handles_of(state: &State, id: u32) -> Vec<String> {
  state.handles.iter().filter(|(_, h)| h.workers.contains(&id)).map(|(k, _)| k.clone()).collect()
}

fn remove_worker(state: &mut State, key: &str, id: u32) {
  let State { handles, listeners, .. } = state;
  let Some(handle) = handles.get_mut(key) else { return };
  handle.workers.remove(&id);
  handle.dispatch.remove(id);
  if !handle.workers.is_empty() {
    if let Kind::ReusePort(reuse) = &mut handle.kind {
      if let Some(fd) = reuse.owned.remove(&id) {
        // Our copy keeps it listening: drain it rather than let its backlog be reset.
        if let Ok(listener) = listener::listen(&fd, backlog(&reuse.query)).and_then(|()| listener::watch(fd.clone())) {
          reuse.orphans.push((listener, fd));
          handle.listeners.push(listener);
          listeners.insert(listener, key.to_owned());
        }
      }
    }
    handle.dispatch.distribute(key);
    return;
  }
  // Pending connections and the listening sockets close as the handle drops.
  let handle = handles.remove(key).expect("present above");
  for listener in &handle.listeners {
    listener::unwatch(*listener);
    listeners.remove(listener);
  }
  // As libuv does when a bound pipe closes: the socket file goes with it.
  if let Some(path) = &handle.path {
    let _ = std::fs::remove_file(path);
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_least_busy_worker_with_room_gets_the_next_connection() {
    let mut dispatch = Dispatch::default();
    dispatch.join(7);
    dispatch.join(8);
    dispatch.join(7);
    assert_eq!(dispatch.workers, [(7, 0), (8, 0)], "a second query from a worker is not a second slot");
    let mut order = Vec::new();
    for _ in 0..2 * NEWCONN_DEPTH {
      let i = dispatch.pick().expect("room left");
      order.push(dispatch.workers[i].0);
      dispatch.workers[i].1 += 1;
      dispatch.next = i + 1;
    }
    assert_eq!(order, [7, 8].repeat(NEWCONN_DEPTH), "alternates while both have room");
    assert_eq!(dispatch.pick(), None, "both full: connections wait in the primary");
    dispatch.workers[1].1 -= 1;
    assert_eq!(dispatch.pick(), Some(1), "the worker that answered");
  }
}
