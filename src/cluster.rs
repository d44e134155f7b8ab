//! The primary's half of Node's `NODE_CLUSTER` protocol, answered without JavaScript.
//!
//! Workers run Node's own worker code; they ask for listening sockets (`queryServer`), report
//! `online`/`listening`, release servers (`close`) and confirm `newconn` hand-offs. Policies:
//! round-robin keeps the listening socket here and hands each accepted connection to the least
//! busy worker (a few `newconn`s outstanding per worker, where Node allows one); shared sends
//! every worker the same bound socket; reuseport gives each worker its own SO_REUSEPORT socket so
//! the kernel balances. JavaScript only hears what it must emit: online, listening,
//! exitedAfterDisconnect.
//!
//! A `Cluster` belongs to one JavaScript environment. It is the `Control` of its workers'
//! channels and the `Acceptor` of its listeners, so neither module knows it. A round-robin
//! listener accepts only while some worker has room; when every worker is at its hand-off depth
//! the connections wait in the kernel's backlog, not in a queue of ours.
//!
//! Reuseport's known hazard is that closing a listening socket resets the connections still in
//! its backlog. We keep a copy of every worker's socket, so a worker's exit closes nothing: its
//! socket becomes an orphan that the primary drains, handing its connections to the other
//! workers like round-robin, until a new worker takes the socket over.
//!
//! Locks: `state`, then any channel's writer (through `send_value`) or a listener's own.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;
use serde_json::{json, Map, Value};

use crate::channel::{Channel, Control};
use crate::events::{Event, Sink};
use crate::framing::handle_envelope;
use crate::listener::{Acceptor, Listener};
use crate::lock::lock;
use crate::reactor::Reactor;
use crate::sockets;

/// Scheduling policies, numbered as Node numbers its own two.
pub const SCHED_NONE: u32 = 1;
pub const SCHED_RR: u32 = 2;
pub const SCHED_REUSEPORT: u32 = 3;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
  /// The worker's channel id.
  pub id: u32,
  /// Connections handed to it over its life.
  pub handed: u64,
  /// Handed and not yet accepted.
  pub unanswered: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ServerStats {
  /// The key workers share it by (Node's `address:port:addressType:fd[:index]`).
  pub key: String,
  /// Connections the primary accepted on it (round-robin, and reuseport's orphans).
  pub accepted: u64,
  /// Accepted connections waiting for a worker with room.
  pub waiting: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ClusterStats {
  pub workers: Vec<WorkerStats>,
  pub servers: Vec<ServerStats>,
}

/// Unanswered `newconn`s per worker. Node allows one, so a worker idles for a round trip
/// between connections; a few in flight keep it fed while the least busy worker still gets
/// each new one.
const NEWCONN_DEPTH: usize = 4;

pub struct Cluster {
  reactor: Arc<Reactor>,
  sink: Arc<Sink>,
  policy: AtomicU32,
  /// Whether a server's key leaves out the worker's listen index for a fixed port, so that
  /// workers listening on one port from separate `listen()` calls share it (Node lines with
  /// nodejs/node#60141).
  fixed_port_keys: AtomicBool,
  /// The primary's message counter, shared by all workers as in Node.
  seq: AtomicU64,
  next_listener: AtomicU32,
  this: Weak<Cluster>,
  state: Mutex<State>,
}

#[derive(Default)]
struct State {
  handles: HashMap<String, Handle>,
  /// Listener id → key of the handle whose connections it accepts.
  listeners: HashMap<u32, String>,
  /// Channels whose worker asked to exit after disconnect: their queries go unanswered.
  leaving: HashSet<u32>,
  /// Every worker's channel, by id.
  workers: HashMap<u32, Weak<Channel>>,
  /// Round-robin servers being made by JavaScript, with the queries waiting for them.
  creating: HashMap<String, Vec<(u32, Value)>>,
}

struct Handle {
  data: Value,
  /// The socket file of a unix-path handle.
  path: Option<String>,
  workers: HashSet<u32>,
  kind: Kind,
  /// Listening sockets the primary accepts on for this handle.
  listeners: Vec<Arc<Listener>>,
  dispatch: Dispatch,
  /// Connections the primary accepted for it since it was created.
  accepted: u64,
}

enum Kind {
  /// One bound socket, sent to every worker (SCHED_NONE, and UDP under any policy).
  Shared {
    fd: OwnedFd,
    dgram: bool,
  },
  ReusePort(ReusePort),
  RoundRobin {
    sockname: Option<Value>,
  },
}

struct ReusePort {
  /// The query, to bind every worker's socket alike (with the port fixed by the first bind).
  query: Value,
  /// Each worker's socket, kept so that its exit does not reset the backlog.
  owned: HashMap<u32, Arc<OwnedFd>>,
  /// Sockets whose worker is gone, by the id of the listener that drains them.
  orphans: Vec<(u32, Arc<OwnedFd>)>,
}

/// Connections the primary accepted, on their way to workers.
#[derive(Default)]
struct Dispatch {
  /// Workers in rotation order, each with its count of unanswered `newconn`s.
  workers: Vec<(u32, usize)>,
  /// Where the rotation resumes.
  next: usize,
  /// Connections to hand out again (refused, or their worker left before answering).
  pending: VecDeque<Arc<OwnedFd>>,
  /// Our `newconn` seq → the worker it went to and the connection, until the worker answers.
  outstanding: HashMap<u64, (u32, Arc<OwnedFd>)>,
  /// Connections handed to each worker so far.
  handed: HashMap<u32, u64>,
}

fn object(value: Value) -> Map<String, Value> {
  match value {
    Value::Object(map) => map,
    _ => Map::new(),
  }
}

/// Node's primary builds the key with JavaScript string conversion; the worker echoes it back.
fn js_string(value: Option<&Value>) -> String {
  match value {
    None => "undefined".into(),
    Some(Value::String(s)) => s.clone(),
    Some(other) => other.to_string(),
  }
}

fn errno_reply(mut reply: Map<String, Value>, errno: Errno) -> Map<String, Value> {
  reply.insert("errno".into(), json!(-(errno as i32)));
  reply
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
  let inherited = message.get("fd").and_then(Value::as_i64).filter(|&fd| fd >= 0);
  let fd = match message.get("addressType") {
    // `listen({ fd })`: the worker's fd number names the same socket in the primary, as in Node.
    _ if inherited.is_some() => sockets::duplicate(inherited.unwrap_or_default() as RawFd)?,
    Some(Value::String(family)) => {
      let default = if family == "udp6" { "::" } else { "0.0.0.0" };
      sockets::bind_udp(ip(address.unwrap_or(default))?, port as u16, flags & 1 != 0, flags & 4 != 0)?
    }
    _ if port < 0 => {
      let path = pipe_path(address.ok_or(Errno::EINVAL)?);
      let flag = |name: &str| message.get(name).and_then(Value::as_bool).unwrap_or(false);
      sockets::bind_pipe(&path, flag("readableAll"), flag("writableAll"))?
    }
    _ => {
      let ip = address.map(ip).transpose()?;
      sockets::bind_tcp(&sockets::Tcp { ip, port: port as u16, ipv6_only: flags & 1 != 0, reuse_port })?
    }
  };
  let bound = sockets::sockname(fd.as_raw_fd()).and_then(|s| s["port"].as_u64()).unwrap_or(0);
  Ok((fd, bound as u16))
}

/// Where the primary binds a worker's socket path. The worker sends it made absolute; Node's
/// primary binds the shorter of that and the same path relative to its own directory, since
/// `sun_path` holds only 107 bytes.
fn pipe_path(address: &str) -> String {
  let Ok(cwd) = std::env::current_dir() else { return address.to_owned() };
  let relative = relative_path(&cwd, Path::new(address));
  if address.len() < relative.len() {
    address.to_owned()
  } else {
    relative
  }
}

/// Node's `path.relative(from, to)` for absolute paths.
fn relative_path(from: &Path, to: &Path) -> String {
  let (from, to): (Vec<_>, Vec<_>) = (from.components().collect(), to.components().collect());
  let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
  let up = std::iter::repeat_n("..".into(), from.len() - common);
  let down = to[common..].iter().map(|part| part.as_os_str().to_string_lossy());
  up.chain(down).collect::<Vec<_>>().join("/")
}

impl Cluster {
  pub fn new(reactor: Arc<Reactor>, sink: Arc<Sink>) -> Arc<Cluster> {
    Arc::new_cyclic(|this| Cluster {
      reactor,
      sink,
      policy: AtomicU32::new(SCHED_RR),
      fixed_port_keys: AtomicBool::new(false),
      seq: AtomicU64::new(0),
      next_listener: AtomicU32::new(1),
      this: this.clone(),
      state: Mutex::default(),
    })
  }

  /// Policy for listening sockets created from now on.
  pub fn set_policy(&self, policy: u32) {
    self.policy.store(policy, Ordering::Relaxed);
  }

  /// How servers are keyed, as the running Node line keys them.
  pub fn set_fixed_port_keys(&self, on: bool) {
    self.fixed_port_keys.store(on, Ordering::Relaxed);
  }

  /// The control to open a worker's channel with.
  pub fn control(&self) -> Arc<dyn Control> {
    self.this.upgrade().expect("a cluster outlives its own calls")
  }

  /// `channel` belongs to a cluster worker; this cluster answers its requests.
  pub fn attach(&self, channel: &Arc<Channel>) {
    lock(&self.state).workers.insert(channel.id, Arc::downgrade(channel));
  }

  /// Primary-side `worker.disconnect()`: queries stop being answered and the worker's handles go.
  pub fn disconnect(&self, id: u32) {
    let mut state = lock(&self.state);
    state.leaving.insert(id);
    if let Some(channel) = state.workers.get(&id).and_then(Weak::upgrade) {
      self.send(&channel, object(json!({ "act": "disconnect" })), None, "");
    }
    for key in handles_of(&state, id) {
      self.remove_worker(&mut state, &key, id, false);
    }
  }

  /// Connection figures per worker and per server, for monitoring.
  pub fn stats(&self) -> ClusterStats {
    let state = lock(&self.state);
    let mut workers: HashMap<u32, WorkerStats> = HashMap::new();
    let mut servers = Vec::new();
    for (key, handle) in &state.handles {
      let dispatch = &handle.dispatch;
      for (&id, &handed) in &dispatch.handed {
        workers.entry(id).or_insert(WorkerStats { id, ..WorkerStats::default() }).handed += handed;
      }
      for &(id, unanswered) in &dispatch.workers {
        workers.entry(id).or_insert(WorkerStats { id, ..WorkerStats::default() }).unanswered += unanswered as u64;
      }
      servers.push(ServerStats { key: key.clone(), accepted: handle.accepted, waiting: dispatch.pending.len() as u64 });
    }
    let mut workers: Vec<_> = workers.into_values().collect();
    workers.sort_by_key(|w| w.id);
    servers.sort_by(|a, b| a.key.cmp(&b.key));
    ClusterStats { workers, servers }
  }

  /// The environment is gone: every listening socket closes, socket files are removed.
  pub fn shutdown(&self) {
    let handles = std::mem::take(&mut lock(&self.state).handles);
    for handle in handles.into_values() {
      remove_socket_file(&handle);
    }
  }

  fn next_seq(&self) -> u64 {
    self.seq.fetch_add(1, Ordering::Relaxed)
  }

  fn send(&self, channel: &Channel, mut message: Map<String, Value>, fd: Option<Arc<OwnedFd>>, native: &str) {
    message.insert("cmd".into(), "NODE_CLUSTER".into());
    message.insert("seq".into(), self.next_seq().into());
    let value = match fd {
      Some(_) => handle_envelope(native, Value::Object(message)),
      None => Value::Object(message),
    };
    // A failed write means the worker is gone; its disconnect cleans up.
    let _ = channel.send_value(&value, fd);
  }

  fn notify(&self, id: u32, message: &Value) {
    self.sink.push(Event::Cluster { id, json: message.to_string() });
  }

  fn query_server(&self, channel: &Channel, message: &Value) {
    let get = |name: &str| message.get(name);
    let mut fields = vec!["address", "port", "addressType", "fd"];
    let by_port = self.fixed_port_keys.load(Ordering::Relaxed) && get("port").and_then(Value::as_i64) != Some(0);
    if !by_port {
      fields.push("index");
    }
    let key = fields.iter().map(|f| js_string(get(f))).collect::<Vec<_>>().join(":");
    let seq = get("seq").cloned().unwrap_or(Value::Null);
    let mut guard = lock(&self.state);
    let state = &mut *guard;
    if state.leaving.contains(&channel.id) {
      return;
    }
    // A second listen() on that port from the same worker: Node binds again and fails.
    if by_port && state.handles.get(&key).is_some_and(|handle| handle.workers.contains(&channel.id)) {
      let reply = object(json!({ "errno": -(Errno::EADDRINUSE as i32), "key": key, "ack": seq, "data": Value::Null }));
      return self.send(channel, reply, None, "");
    }
    if !state.handles.contains_key(&key) {
      if made_by_javascript(self.policy.load(Ordering::Relaxed), message) {
        let waiting = state.creating.entry(key.clone()).or_default();
        waiting.push((channel.id, message.clone()));
        if waiting.len() == 1 {
          self.notify(channel.id, &json!({ "act": "listen", "key": key, "query": message }));
        }
        return;
      }
      match self.create_handle(message) {
        Ok(handle) => {
          for listener in &handle.listeners {
            state.listeners.insert(listener.id, key.clone());
          }
          state.handles.insert(key.clone(), handle);
        }
        Err(errno) => {
          let reply = object(json!({ "errno": -(errno as i32), "key": key, "ack": seq, "data": Value::Null }));
          return self.send(channel, reply, None, "");
        }
      }
    }
    self.answer_query(state, channel, message, &key);
  }

  /// JavaScript made the round-robin server at `key` (its listening socket, or the errno of the
  /// failure): the queries that waited for it are answered.
  pub fn adopt_server(&self, key: &str, socket: Result<OwnedFd, Errno>) {
    let mut guard = lock(&self.state);
    let state = &mut *guard;
    let Some(waiting) = state.creating.remove(key) else { return };
    let alive: Vec<(Arc<Channel>, Value)> = waiting
      .into_iter()
      .filter(|(id, _)| !state.leaving.contains(id))
      .filter_map(|(id, message)| Some((state.workers.get(&id)?.upgrade()?, message)))
      .collect();
    if alive.is_empty() {
      return;
    }
    match socket.and_then(|fd| self.round_robin(fd)) {
      Ok((kind, listeners)) => {
        for listener in &listeners {
          state.listeners.insert(listener.id, key.to_owned());
        }
        let handle = Handle::new(kind, listeners, None);
        state.handles.insert(key.to_owned(), handle);
        for (channel, message) in &alive {
          self.answer_query(state, channel, message, key);
        }
      }
      Err(errno) => {
        for (channel, message) in &alive {
          let seq = message.get("seq").cloned().unwrap_or(Value::Null);
          let reply = object(json!({ "errno": -(errno as i32), "key": key, "ack": seq, "data": Value::Null }));
          self.send(channel, reply, None, "");
        }
      }
    }
  }

  /// The worker's share of the handle at `key`: the reply to its query, and its place in the rotation.
  fn answer_query(&self, state: &mut State, channel: &Channel, message: &Value, key: &str) {
    let get = |name: &str| message.get(name);
    let seq = get("seq").cloned().unwrap_or(Value::Null);
    let State { handles, listeners, workers, .. } = state;
    let Some(handle) = handles.get_mut(key) else { return };
    if handle.data.is_null() {
      handle.data = get("data").cloned().unwrap_or(Value::Null);
    }
    handle.workers.insert(channel.id);
    let mut reply = object(json!({ "errno": 0, "key": key, "ack": seq, "data": handle.data }));
    match &mut handle.kind {
      Kind::Shared { fd, dgram } => match fd.try_clone() {
        Ok(copy) => self.send(channel, reply, Some(Arc::new(copy)), if *dgram { "dgram.Native" } else { "net.Native" }),
        Err(e) => {
          self.send(channel, errno_reply(reply, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF))), None, "")
        }
      },
      Kind::ReusePort(reuse) => {
        let socket = match reuse.orphans.pop() {
          Some((listener, fd)) => {
            handle.listeners.retain(|l| l.id != listener);
            listeners.remove(&listener);
            Ok(fd)
          }
          None => bind_for(&reuse.query, true).map(|(fd, _)| Arc::new(fd)),
        };
        match socket {
          Ok(fd) => {
            reuse.owned.insert(channel.id, fd.clone());
            self.send(channel, reply, Some(fd), "net.Native");
            handle.dispatch.join(channel.id);
            self.distribute(handle, key, workers);
          }
          Err(errno) => self.send(channel, errno_reply(reply, errno), None, ""),
        }
      }
      Kind::RoundRobin { sockname } => {
        reply.insert("errno".into(), Value::Null);
        if let Some(sockname) = sockname {
          reply.insert("sockname".into(), sockname.clone());
        }
        self.send(channel, reply, None, "");
        handle.dispatch.join(channel.id);
        self.distribute(handle, key, workers);
      }
    }
  }

  fn create_handle(&self, message: &Value) -> Result<Handle, Errno> {
    let address_type = message.get("addressType");
    let dgram = matches!(address_type.and_then(Value::as_str), Some("udp4" | "udp6"));
    let policy = self.policy.load(Ordering::Relaxed);
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
      sockets::listen(&fd, backlog(message))?;
      let (kind, watching) = self.round_robin(fd)?;
      listeners = watching;
      kind
    };
    let path = if message.get("port").and_then(Value::as_i64).is_some_and(|p| p < 0) {
      message.get("address").and_then(Value::as_str).map(pipe_path)
    } else {
      None
    };
    Ok(Handle::new(kind, listeners, path))
  }

  /// A listening socket whose connections the primary accepts and hands out.
  fn round_robin(&self, fd: OwnedFd) -> Result<(Kind, Vec<Arc<Listener>>), Errno> {
    let sockname = sockets::sockname(fd.as_raw_fd());
    let listener = self.watch(Arc::new(fd))?;
    Ok((Kind::RoundRobin { sockname }, vec![listener]))
  }

  fn watch(&self, fd: Arc<OwnedFd>) -> Result<Arc<Listener>, Errno> {
    let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
    Listener::watch(&self.reactor, id, fd, self.this.clone() as Weak<dyn Acceptor>)
  }

  /// Hands queued connections to workers with room; wakes the handle's listeners if room is left.
  fn distribute(&self, handle: &mut Handle, key: &str, workers: &HashMap<u32, Weak<Channel>>) {
    let dispatch = &mut handle.dispatch;
    while !dispatch.pending.is_empty() {
      let Some(i) = dispatch.pick() else { break };
      let worker = dispatch.workers[i].0;
      let conn = dispatch.pending.pop_front().expect("checked non-empty");
      let seq = self.next_seq();
      let message = json!({ "cmd": "NODE_CLUSTER", "act": "newconn", "key": key, "seq": seq });
      let envelope = handle_envelope("net.Native", message);
      let channel = workers.get(&worker).and_then(Weak::upgrade);
      match channel.ok_or(Errno::EPIPE).and_then(|channel| channel.send_value(&envelope, Some(conn.clone()))) {
        Ok(_) => {
          dispatch.workers[i].1 += 1;
          dispatch.next = i + 1;
          dispatch.outstanding.insert(seq, (worker, conn));
          *dispatch.handed.entry(worker).or_default() += 1;
        }
        // The worker's channel just closed: out of the rotation now, before its disconnect says so.
        Err(_) => {
          dispatch.pending.push_front(conn);
          dispatch.remove(worker);
        }
      }
    }
    if dispatch.room() > 0 {
      handle.listeners.iter().for_each(|listener| listener.resume());
    }
  }

  fn newconn_answered(&self, worker: u32, ack: u64, accepted: bool) {
    let mut guard = lock(&self.state);
    let State { handles, workers, .. } = &mut *guard;
    for (key, handle) in handles.iter_mut() {
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
      self.distribute(handle, key, workers);
      return;
    }
  }

  /// The worker on channel `id` is gone: out of every rotation, its unanswered connections requeued.
  fn on_disconnect(&self, id: u32) {
    let mut state = lock(&self.state);
    state.leaving.remove(&id);
    state.workers.remove(&id);
    // Every handle, not only those it still shares: a worker that was leaving may have
    // connections it never answered for on handles it has left.
    let keys: Vec<String> = state.handles.keys().cloned().collect();
    for key in keys {
      self.remove_worker(&mut state, &key, id, true);
    }
  }

  /// Takes worker `id` off the handle at `key`. A worker that is only leaving may still accept
  /// the connections it was handed (its answer is on the way), so those stay with it; once it is
  /// `gone`, those it never answered for go to the others.
  fn remove_worker(&self, state: &mut State, key: &str, id: u32, gone: bool) {
    let State { handles, listeners, workers, .. } = state;
    let Some(handle) = handles.get_mut(key) else { return };
    handle.workers.remove(&id);
    if gone {
      handle.dispatch.remove(id);
    } else {
      handle.dispatch.retire(id);
    }
    if !handle.workers.is_empty() {
      if let Kind::ReusePort(reuse) = &mut handle.kind {
        if let Some(fd) = reuse.owned.remove(&id) {
          // Our copy keeps it listening: drain it rather than let its backlog be reset.
          if let Ok(listener) = sockets::listen(&fd, backlog(&reuse.query)).and_then(|()| self.watch(fd.clone())) {
            reuse.orphans.push((listener.id, fd));
            listeners.insert(listener.id, key.to_owned());
            handle.listeners.push(listener);
          }
        }
      }
      return self.distribute(handle, key, workers);
    }
    // Pending connections and the listening sockets close as the handle drops.
    let handle = handles.remove(key).expect("present above");
    for listener in &handle.listeners {
      listeners.remove(&listener.id);
    }
    remove_socket_file(&handle);
  }
}

impl Handle {
  fn new(kind: Kind, listeners: Vec<Arc<Listener>>, path: Option<String>) -> Handle {
    Handle {
      data: Value::Null,
      path,
      workers: HashSet::new(),
      kind,
      listeners,
      dispatch: Dispatch::default(),
      accepted: 0,
    }
  }
}

/// Whether JavaScript makes this server, as Node's primary makes a round-robin server, through
/// `net.Server#listen` (so that what wraps that method sees the call, backlog and all), and then
/// hands its socket to the core: round-robin TCP, or an inherited fd. Shared and UDP handles Node
/// makes without that method; a unix path stays with the core too, since libuv unlinks the socket
/// file when the server object that made it closes.
fn made_by_javascript(policy: u32, message: &Value) -> bool {
  let inherited = message.get("fd").and_then(Value::as_i64).is_some_and(|fd| fd >= 0);
  policy == SCHED_RR && (is_tcp(message) || inherited)
}

/// As libuv does when a bound pipe closes: the socket file goes with it.
fn remove_socket_file(handle: &Handle) {
  if let Some(path) = &handle.path {
    let _ = std::fs::remove_file(path);
  }
}

fn handles_of(state: &State, id: u32) -> Vec<String> {
  state.handles.iter().filter(|(_, h)| h.workers.contains(&id)).map(|(k, _)| k.clone()).collect()
}

impl Control for Cluster {
  fn message(&self, channel: &Channel, message: Value) {
    let act = message.get("act").and_then(Value::as_str).unwrap_or("");
    match act {
      "online" | "listening" => self.notify(channel.id, &message),
      "queryServer" => self.query_server(channel, &message),
      "close" => {
        if let Some(key) = message.get("key").and_then(Value::as_str) {
          let mut state = lock(&self.state);
          self.remove_worker(&mut state, key, channel.id, false);
        }
      }
      "exitedAfterDisconnect" => {
        lock(&self.state).leaving.insert(channel.id);
        self.notify(channel.id, &message);
        self.send(channel, object(json!({ "ack": message.get("seq") })), None, "");
      }
      "" => {
        if let (Some(ack), Some(accepted)) = (message.get("ack").and_then(Value::as_u64), message.get("accepted")) {
          self.newconn_answered(channel.id, ack, accepted.as_bool().unwrap_or(false));
        }
      }
      _ => {}
    }
  }

  fn closed(&self, channel: &Channel) {
    self.on_disconnect(channel.id);
  }
}

impl Acceptor for Cluster {
  fn room(&self, listener: u32) -> usize {
    let state = lock(&self.state);
    let handle = state.listeners.get(&listener).and_then(|key| state.handles.get(key));
    handle.map_or(0, |handle| handle.dispatch.room())
  }

  fn take(&self, listener: u32, accept: &mut dyn FnMut(usize) -> Vec<OwnedFd>) -> bool {
    let mut guard = lock(&self.state);
    let State { handles, listeners, workers, .. } = &mut *guard;
    let Some(key) = listeners.get(&listener) else { return false };
    let Some(handle) = handles.get_mut(key) else { return false };
    let room = handle.dispatch.room();
    if room == 0 {
      return false;
    }
    let connections = accept(room);
    handle.accepted += connections.len() as u64;
    handle.dispatch.pending.extend(connections.into_iter().map(Arc::new));
    self.distribute(handle, key, workers);
    true
  }

  /// Every worker sharing the listener hears of it, as an error on its channel.
  fn failed(&self, listener: u32, reason: String) {
    let state = lock(&self.state);
    let handle = state.listeners.get(&listener).and_then(|key| state.handles.get(key));
    for id in handle.map(|h| h.workers.iter().copied().collect::<Vec<_>>()).unwrap_or_default() {
      self.sink.push(Event::Error { id, message: format!("listening socket: {reason}") });
    }
  }
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
    (0..n)
      .map(|i| (self.next + i) % n)
      .filter(|&i| self.workers[i].1 < NEWCONN_DEPTH)
      .min_by_key(|&i| self.workers[i].1)
  }

  /// Connections the workers could take now beyond those already waiting here.
  fn room(&self) -> usize {
    let free: usize = self.workers.iter().map(|&(_, n)| NEWCONN_DEPTH.saturating_sub(n)).sum();
    free.saturating_sub(self.pending.len())
  }

  /// Takes `worker` out of the rotation, leaving what it was handed to its answers.
  fn retire(&mut self, worker: u32) {
    self.workers.retain(|&(w, _)| w != worker);
  }

  /// Takes `worker` out of the rotation; what it had not confirmed goes to the others.
  fn remove(&mut self, worker: u32) {
    self.retire(worker);
    let lost: Vec<u64> = self.outstanding.iter().filter(|(_, (w, _))| *w == worker).map(|(seq, _)| *seq).collect();
    for seq in lost {
      let (_, conn) = self.outstanding.remove(&seq).expect("listed above");
      self.pending.push_front(conn);
    }
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

  #[test]
  fn relative_paths_as_node_computes_them() {
    let rel = |from: &str, to: &str| relative_path(Path::new(from), Path::new(to));
    assert_eq!(rel("/a/b", "/a/b/app.sock"), "app.sock");
    assert_eq!(rel("/a/b/c", "/a/x/app.sock"), "../../x/app.sock");
    assert_eq!(rel("/", "/tmp/s"), "tmp/s");
    assert_eq!(rel("/a/b", "/a/b"), "");
  }

  mod over_channels {
    use super::*;
    use crate::channel;
    use crate::framing::Mode;
    use nix::sys::epoll::EpollEvent;
    use nix::sys::socket::{recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
    use std::io::IoSliceMut;
    use std::net::{Ipv4Addr, TcpStream};
    use std::os::fd::{FromRawFd, RawFd};

    /// A worker as the cluster sees it: our end of its channel, and the worker's end.
    fn worker(reactor: &Arc<Reactor>, sink: &Arc<Sink>, cluster: &Arc<Cluster>, id: u32) -> (Arc<Channel>, OwnedFd) {
      let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
      let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, flags).unwrap();
      let options =
        channel::Options { id, mode: Mode::Json, limit: 1 << 20, sink: sink.clone(), control: Some(cluster.control()) };
      let channel = Channel::open(reactor, ours, options).unwrap();
      cluster.attach(&channel);
      (channel, theirs)
    }

    /// Everything the worker can read now: its lines, and how many fds came with them.
    fn read_all(theirs: &OwnedFd) -> (Vec<Value>, usize) {
      let (mut bytes, mut fds) = (Vec::new(), 0);
      loop {
        let mut buf = vec![0u8; 64 << 10];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let Ok(msg) = recvmsg::<()>(theirs.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) else {
          break;
        };
        for cmsg in msg.cmsgs().unwrap() {
          if let ControlMessageOwned::ScmRights(received) = cmsg {
            fds += received.len();
            // SAFETY: the kernel just installed these fds in the test's table; closing them is ours.
            received.into_iter().for_each(|fd| drop(unsafe { OwnedFd::from_raw_fd(fd) }));
          }
        }
        let n = msg.bytes;
        bytes.extend_from_slice(&buf[..n]);
      }
      let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
      (lines.map(|l| serde_json::from_slice(l).unwrap()).collect(), fds)
    }

    /// Node writes `cmd` first, which is how internal messages are told apart (serde_json sorts keys).
    fn say(theirs: &OwnedFd, line: &str) {
      nix::unistd::write(theirs, format!("{line}\n").as_bytes()).unwrap();
    }

    /// What JavaScript does when the core asks it for a round-robin server: listens as the query
    /// says (here always 127.0.0.1 with the query's port and backlog) and hands the socket over.
    fn make_servers(sink: &Sink, cluster: &Cluster) {
      for event in sink.take() {
        let Event::Cluster { json, .. } = event else { continue };
        let asked: Value = serde_json::from_str(&json).unwrap();
        if asked["act"] != "listen" {
          continue;
        }
        let query = &asked["query"];
        let spec = sockets::Tcp {
          ip: Some(Ipv4Addr::LOCALHOST.into()),
          port: query["port"].as_u64().unwrap() as u16,
          ipv6_only: false,
          reuse_port: false,
        };
        let fd = sockets::bind_tcp(&spec).unwrap();
        sockets::listen(&fd, backlog(query)).unwrap();
        cluster.adopt_server(asked["key"].as_str().unwrap(), Ok(fd));
      }
    }

    #[test]
    fn round_robin_feeds_each_worker_up_to_its_depth_and_leaves_the_rest_in_the_backlog() {
      let reactor = Arc::new(Reactor::new().unwrap());
      let sink = Arc::new(Sink::new(None));
      let cluster = Cluster::new(reactor.clone(), sink.clone());
      let (_channel, theirs) = worker(&reactor, &sink, &cluster, 1);
      let turn = || while reactor.turn(&mut [EpollEvent::empty(); 8], Some(50)).unwrap() > 0 {};

      say(
        &theirs,
        r#"{"cmd":"NODE_CLUSTER","act":"queryServer","address":"127.0.0.1","port":0,"addressType":4,"fd":-1,"index":0,"backlog":16,"data":null,"seq":0}"#,
      );
      turn();
      assert!(read_all(&theirs).0.is_empty(), "the reply waits for the server JavaScript makes");
      make_servers(&sink, &cluster);
      let (replies, _) = read_all(&theirs);
      assert_eq!(replies[0]["ack"], 0);
      assert_eq!(replies[0]["errno"], Value::Null, "round-robin: no socket for the worker");
      let port = replies[0]["sockname"]["port"].as_u64().unwrap() as u16;

      let _clients: Vec<_> =
        (0..NEWCONN_DEPTH + 3).map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap()).collect();
      turn();
      let (newconns, fds) = read_all(&theirs);
      assert_eq!((newconns.len(), fds), (NEWCONN_DEPTH, NEWCONN_DEPTH), "one fd per newconn, up to the depth");
      assert!(newconns.iter().all(|m| m["cmd"] == "NODE_HANDLE" && m["msg"]["act"] == "newconn"));
      let state = lock(&cluster.state);
      let handle = state.handles.values().next().unwrap();
      assert!(handle.dispatch.pending.is_empty(), "nothing accepted beyond the workers' room");
      assert_eq!(cluster_room(&state), 0);
      drop(state);

      // The worker ACKs the handles and accepts one connection: exactly one more comes.
      let first = newconns[0]["msg"]["seq"].clone();
      for _ in 0..NEWCONN_DEPTH {
        say(&theirs, r#"{"cmd":"NODE_HANDLE_ACK"}"#);
      }
      say(&theirs, &format!(r#"{{"cmd":"NODE_CLUSTER","ack":{first},"accepted":true,"seq":1}}"#));
      turn();
      let (more, fds) = read_all(&theirs);
      assert_eq!((more.len(), fds), (1, 1));

      // The worker goes: its connections stay with the primary until another worker comes.
      drop(theirs);
      turn();
      assert!(lock(&cluster.state).handles.is_empty(), "its last worker gone, the handle closes");
    }

    #[test]
    fn a_leaving_worker_keeps_what_it_was_handed_and_only_a_gone_one_gives_it_up() {
      let reactor = Arc::new(Reactor::new().unwrap());
      let sink = Arc::new(Sink::new(None));
      let cluster = Cluster::new(reactor.clone(), sink.clone());
      let turn = || while reactor.turn(&mut [EpollEvent::empty(); 8], Some(50)).unwrap() > 0 {};
      let query = r#"{"cmd":"NODE_CLUSTER","act":"queryServer","address":"127.0.0.1","port":0,"addressType":4,"fd":-1,"index":0,"data":null,"seq":0}"#;
      let (_a, a) = worker(&reactor, &sink, &cluster, 1);
      say(&a, query);
      turn();
      make_servers(&sink, &cluster);
      let port = read_all(&a).0[0]["sockname"]["port"].as_u64().unwrap() as u16;
      let connect = |n: usize| -> Vec<TcpStream> {
        (0..n).map(|_| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap()).collect()
      };
      let _first = connect(2);
      turn();
      assert_eq!(read_all(&a).1, 2, "worker 1 has two connections unanswered");
      let (_b, b) = worker(&reactor, &sink, &cluster, 2);
      say(&b, query);
      turn();
      read_all(&b);

      // Worker 1 is asked to leave: it may be accepting those two right now.
      cluster.disconnect(1);
      turn();
      assert_eq!(read_all(&b).1, 0, "nothing of worker 1's goes to worker 2 while worker 1 may still accept it");
      let _second = connect(1);
      turn();
      assert_eq!(read_all(&b).1, 1, "new connections go to worker 2 only");
      assert_eq!(read_all(&a).1, 0);

      // Worker 1 dies without answering: now its two are given to worker 2.
      drop(a);
      turn();
      assert_eq!(read_all(&b).1, 2);
    }

    #[test]
    fn a_reuseport_orphan_is_accepted_from_only_while_it_is_ours() {
      let reactor = Arc::new(Reactor::new().unwrap());
      let sink = Arc::new(Sink::new(None));
      let cluster = Cluster::new(reactor.clone(), sink.clone());
      cluster.set_policy(SCHED_REUSEPORT);
      let turn = || while reactor.turn(&mut [EpollEvent::empty(); 8], Some(50)).unwrap() > 0 {};
      let query = r#"{"cmd":"NODE_CLUSTER","act":"queryServer","address":"127.0.0.1","port":0,"addressType":4,"fd":-1,"index":0,"data":null,"seq":0}"#;
      let (_a, a) = worker(&reactor, &sink, &cluster, 1);
      let (_b, b) = worker(&reactor, &sink, &cluster, 2);
      for theirs in [&a, &b] {
        say(theirs, query);
        turn();
        assert_eq!(read_all(theirs).1, 1, "each worker gets a socket of its own");
      }

      // Worker 1 leaves: the primary listens on its socket (the workers here never do) and drains it.
      cluster.disconnect(1);
      let orphan = |state: &State| match &state.handles.values().next().unwrap().kind {
        Kind::ReusePort(reuse) => reuse.orphans.first().map(|(id, fd)| (*id, fd.as_raw_fd())),
        _ => unreachable!("a reuseport handle"),
      };
      let (listener, fd) = orphan(&lock(&cluster.state)).expect("worker 1's socket is an orphan");
      let port = sockets::sockname(fd).unwrap()["port"].as_u64().unwrap() as u16;
      let _first = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
      let took = cluster.take(listener, &mut |room| {
        assert!(cluster.state.try_lock().is_err(), "accepting under the cluster's lock: no hand-over in between");
        assert!(room > 0);
        let conn = nix::sys::socket::accept4(fd, SockFlag::SOCK_CLOEXEC).unwrap();
        // SAFETY: accept4 returned a new fd that nothing else owns.
        vec![unsafe { OwnedFd::from_raw_fd(conn) }]
      });
      assert!(took);
      assert_eq!(read_all(&b).1, 1, "the accepted connection goes to worker 2");

      // A new worker takes the socket over: its old listener may still be mid-readiness on the
      // other thread, and must leave the backlog to the new owner.
      let (_c, c) = worker(&reactor, &sink, &cluster, 3);
      say(&c, query);
      turn();
      assert_eq!(read_all(&c).1, 1, "worker 3 gets the orphan");
      assert_eq!(orphan(&lock(&cluster.state)), None);
      let mut second = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
      assert!(!cluster.take(listener, &mut |_| panic!("accepted on a socket handed over")));
      second.set_nonblocking(true).unwrap();
      let waiting = std::io::Read::read(&mut second, &mut [0u8; 1]).unwrap_err();
      assert_eq!(waiting.kind(), std::io::ErrorKind::WouldBlock, "the connection waits for worker 3, not reset");
    }

    fn cluster_room(state: &State) -> usize {
      state.handles.values().map(|h| h.dispatch.room()).sum()
    }
  }
}
