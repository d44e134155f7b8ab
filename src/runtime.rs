//! One JavaScript environment's share of the Rust core: its channels, children, cluster state and
//! event sink. The main thread and every worker_thread that loads rust-cluster each have one
//! (napi instance data, see lib.rs), all served by the process-wide reactor thread; every source
//! holds its environment's sink, so an event can only reach the environment that owns its fd.
//!
//! When the environment exits, its runtime drops: channels close (a child sees its channel end,
//! as when Node's own ChildProcess goes with its environment), children that still run become
//! orphans that are reaped when they exit, listening sockets close, and events not yet taken are
//! dropped with any fd they carry.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use nix::errno::Errno;

use crate::channel::{self, Channel, TrafficStats};
use crate::cluster::{Cluster, ClusterStats};
use crate::events::{Event, Notify, Sink};
use crate::framing::Mode;
use crate::js_loop::Watch;
use crate::lock::lock;
use crate::process::{self, Child, Usage};
use crate::reactor::{BatchEnd, Reactor};
use crate::spawn;

pub struct Runtime {
  reactor: Arc<Reactor>,
  /// This environment's reading channels: served by its own loop while it waits, by the
  /// reactor thread through `watch` otherwise (see js_loop.rs).
  local: Arc<Reactor>,
  watch: Arc<Watch>,
  sink: Arc<Sink>,
  pub cluster: Arc<Cluster>,
  next_id: AtomicU32,
  channels: Mutex<HashMap<u32, Arc<Channel>>>,
  children: Mutex<HashMap<u32, Arc<Child>>>,
}

/// The IPC channel of a child about to be spawned.
pub struct Ipc {
  /// Its index in the child's stdio.
  pub index: usize,
  pub mode: Mode,
  pub limit: usize,
  /// A cluster worker: this runtime's cluster answers its `NODE_CLUSTER` requests.
  pub worker: bool,
}

pub struct Spawned {
  pub id: u32,
  pub pid: i32,
  /// The parent's end of each 'pipe' entry, by stdio index.
  pub pipes: Vec<Option<OwnedFd>>,
}

pub struct Stats {
  pub channels: Vec<(u32, TrafficStats)>,
  pub children: Vec<(u32, i32, Option<Usage>)>,
  pub cluster: ClusterStats,
  /// Times the reactor thread read this environment's channels because JavaScript was busy.
  pub busy_reads: u64,
}

pub enum SpawnError {
  /// The child did not start (exec failed, …): Node reports these as the child's 'error'.
  NotStarted(Errno),
  /// It started, but could not be watched; it has been killed and reaped.
  Setup(&'static str, Errno),
}

impl Runtime {
  pub fn new(reactor: Arc<Reactor>, notify: Option<Notify>) -> Result<Runtime, Errno> {
    let sink = Arc::new(Sink::new(notify));
    reactor.add_batch_hook(Arc::downgrade(&sink) as Weak<dyn BatchEnd>);
    let cluster = Cluster::new(reactor.clone(), sink.clone());
    let local = Arc::new(Reactor::new()?);
    let watch = Watch::new(&reactor, local.clone())?;
    Ok(Runtime {
      reactor,
      local,
      watch,
      sink,
      cluster,
      next_id: AtomicU32::new(1),
      channels: Mutex::default(),
      children: Mutex::default(),
    })
  }

  /// What the JavaScript thread's loop needs to serve this environment's channels.
  pub fn loop_parts(&self) -> (Arc<Reactor>, Arc<Watch>, Arc<Sink>) {
    (self.local.clone(), self.watch.clone(), self.sink.clone())
  }

  fn next_id(&self) -> u32 {
    self.next_id.fetch_add(1, Ordering::Relaxed)
  }

  fn channel_options(&self, id: u32, mode: Mode, limit: usize, worker: bool) -> channel::Options {
    let control = worker.then(|| self.cluster.control());
    channel::Options { id, mode, limit, sink: self.sink.clone(), control }
  }

  pub fn spawn(&self, plan: spawn::Options, ipc: Option<Ipc>) -> Result<Spawned, SpawnError> {
    let id = self.next_id();
    let spawned = spawn::spawn(plan).map_err(SpawnError::NotStarted)?;
    let pid = spawned.pid;
    let mut pipes = spawned.parent_ends;
    let mut adopt = || -> Result<(Option<Arc<Channel>>, Arc<Child>), SpawnError> {
      let channel = match &ipc {
        Some(ipc) => {
          let fd = pipes[ipc.index].take().expect("an ipc entry has a parent end");
          let channel = Channel::open(&self.local, fd, self.channel_options(id, ipc.mode, ipc.limit, ipc.worker))
            .map_err(|e| SpawnError::Setup("ipc channel", e))?;
          if ipc.worker {
            self.cluster.attach(&channel);
          }
          Some(channel)
        }
        None => None,
      };
      let pidfd = process::pidfd(pid).map_err(|e| SpawnError::Setup("pidfd_open", e))?;
      let child = Child::watch(&self.reactor, id, pid, pidfd, self.sink.clone(), channel.as_ref())
        .map_err(|e| SpawnError::Setup("watching the child", e))?;
      Ok((channel, child))
    };
    match adopt() {
      Ok((channel, child)) => {
        if let Some(channel) = channel {
          lock(&self.channels).insert(id, channel);
        }
        lock(&self.children).insert(id, child);
        Ok(Spawned { id, pid, pipes })
      }
      Err(error) => {
        process::discard(pid);
        Err(error)
      }
    }
  }

  /// A connected stream socket as a message channel; returns its id.
  pub fn open_channel(&self, fd: OwnedFd, mode: Mode, limit: usize) -> Result<u32, Errno> {
    let id = self.next_id();
    let channel = Channel::open(&self.local, fd, self.channel_options(id, mode, limit, false))?;
    lock(&self.channels).insert(id, channel);
    Ok(id)
  }

  /// A write-only channel on a socket that Node itself reads; returns its id.
  pub fn open_writer(&self, fd: OwnedFd, mode: Mode) -> Result<u32, Errno> {
    let id = self.next_id();
    let channel = Channel::open_writer(&self.reactor, fd, self.channel_options(id, mode, 0, false))?;
    lock(&self.channels).insert(id, channel);
    Ok(id)
  }

  pub fn channel(&self, id: u32) -> Option<Arc<Channel>> {
    lock(&self.channels).get(&id).cloned()
  }

  pub fn kill(&self, id: u32, signal: i32) -> Result<(), Errno> {
    let child = lock(&self.children).get(&id).cloned().ok_or(Errno::ESRCH)?;
    child.kill(signal)
  }

  /// Closes channel `id` at our end; returns how many chunks JavaScript wrote through it.
  pub fn close(&self, id: u32) -> u64 {
    let channel = lock(&self.channels).remove(&id);
    let completed = channel.map_or(0, |channel| channel.close());
    // Closing may have queued events (a worker's disconnect) that no reactor batch will announce.
    self.sink.wake();
    completed
  }

  /// Figures for monitoring: each channel's traffic, each child's usage, the cluster's hand-offs.
  pub fn stats(&self) -> Stats {
    let channels = lock(&self.channels).values().map(|c| (c.id, c.traffic())).collect();
    let children = lock(&self.children).values().map(|c| (c.id, c.pid, c.usage())).collect();
    Stats { channels, children, cluster: self.cluster.stats(), busy_reads: self.watch.served() }
  }

  /// Everything queued since the last call, in order. A channel or child is forgotten once its
  /// last event (disconnect, exit) goes to JavaScript.
  pub fn take(&self) -> Vec<Event> {
    // JavaScript is running (its dispatch): if it stays busy, the reactor takes the channels.
    self.watch.busy();
    let events = self.sink.take();
    for event in &events {
      match event {
        Event::Disconnect { id } => drop(lock(&self.channels).remove(id)),
        Event::Exit { id, .. } => drop(lock(&self.children).remove(id)),
        _ => {}
      }
    }
    events
  }
}

impl Drop for Runtime {
  fn drop(&mut self) {
    self.sink.close();
    let channels: Vec<_> = lock(&self.channels).drain().map(|(_, channel)| channel).collect();
    for channel in channels {
      channel.close();
    }
    let children: Vec<_> = lock(&self.children).drain().map(|(_, child)| child).collect();
    children.into_iter().for_each(Child::orphan);
    self.cluster.shutdown();
  }
}
