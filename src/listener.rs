//! Sockets the primary creates for its workers, and the round-robin accept loop.
//!
//! Binding follows what Node's primary does for a worker's `listen()`: TCP with no host tries
//! `::` (dual stack) before `0.0.0.0`, SO_REUSEADDR as libuv sets it, unix paths as given. A
//! round-robin listener is watched by the reactor; its connections are accepted here and handed
//! to the cluster module without touching JavaScript.

use crate::lock::lock;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::socket::{
  self, bind, getsockname, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
  UnixAddr,
};
use once_cell::sync::Lazy;
use serde_json::{json, Value};

use crate::cluster;
use crate::reactor::{self, Kind};

/// Connections accepted per readiness event before other fds get a turn.
const ACCEPTS_PER_WAKE: usize = 256;

static NEXT_ID: AtomicU32 = AtomicU32::new(1);
static LISTENERS: Lazy<Mutex<HashMap<u32, Arc<OwnedFd>>>> = Lazy::new(Default::default);

pub struct Tcp {
  pub ip: Option<IpAddr>,
  pub port: u16,
  pub ipv6_only: bool,
  pub reuse_port: bool,
}

pub fn bind_tcp(spec: &Tcp) -> Result<OwnedFd, Errno> {
  match spec.ip {
    Some(ip) => bind_inet(SocketAddr::new(ip, spec.port), SockType::Stream, spec),
    None => bind_inet(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), spec.port), SockType::Stream, spec)
      .or_else(|_| bind_inet(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), spec.port), SockType::Stream, spec)),
  }
}

pub fn bind_udp(ip: IpAddr, port: u16, ipv6_only: bool, reuse_addr: bool) -> Result<OwnedFd, Errno> {
  let spec = Tcp { ip: Some(ip), port, ipv6_only, reuse_port: false };
  let fd = socket_for(&SocketAddr::new(ip, port), SockType::Datagram)?;
  if reuse_addr {
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
  }
  bind_addr(fd, SocketAddr::new(ip, port), &spec, false)
}

fn bind_inet(addr: SocketAddr, kind: SockType, spec: &Tcp) -> Result<OwnedFd, Errno> {
  let fd = socket_for(&addr, kind)?;
  setsockopt(&fd, sockopt::ReuseAddr, &true)?;
  bind_addr(fd, addr, spec, spec.reuse_port)
}

fn socket_for(addr: &SocketAddr, kind: SockType) -> Result<OwnedFd, Errno> {
  let family = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
  socket::socket(family, kind, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)
}

fn bind_addr(fd: OwnedFd, addr: SocketAddr, spec: &Tcp, reuse_port: bool) -> Result<OwnedFd, Errno> {
  if reuse_port {
    setsockopt(&fd, sockopt::ReusePort, &true)?;
  }
  match addr {
    SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
    SocketAddr::V6(v6) => {
      setsockopt(&fd, sockopt::Ipv6V6Only, &spec.ipv6_only)?;
      bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?
    }
  }
  Ok(fd)
}

pub fn bind_pipe(path: &str, readable_all: bool, writable_all: bool) -> Result<OwnedFd, Errno> {
  let fd = socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
  bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
  if readable_all || writable_all {
    let mode = 0o600 | if readable_all { 0o044 } else { 0 } | if writable_all { 0o022 } else { 0 };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
      .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EPERM)))?;
  }
  Ok(fd)
}

pub fn listen(fd: &OwnedFd, backlog: i32) -> Result<(), Errno> {
  socket::listen(fd, socket::Backlog::new(backlog).unwrap_or(socket::Backlog::MAXCONN))
}

/// `{address, family, port}` as Node's `getsockname` reports it; `None` for unix sockets.
pub fn sockname(fd: RawFd) -> Option<Value> {
  let addr: SockaddrStorage = getsockname(fd).ok()?;
  if let Some(v4) = addr.as_sockaddr_in() {
    return Some(json!({ "address": v4.ip().to_string(), "family": "IPv4", "port": v4.port() }));
  }
  let v6 = addr.as_sockaddr_in6()?;
  Some(json!({ "address": v6.ip().to_string(), "family": "IPv6", "port": v6.port() }))
}

/// Starts accepting on a listening socket; returns its listener id.
pub fn watch(fd: Arc<OwnedFd>) -> Result<u32, Errno> {
  keep_reserve();
  let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
  lock(&LISTENERS).insert(id, fd.clone());
  reactor::register(fd.as_fd(), Kind::Listener, id).inspect_err(|_| {
    lock(&LISTENERS).remove(&id);
  })?;
  Ok(id)
}

pub fn unwatch(id: u32) {
  if let Some(fd) = lock(&LISTENERS).remove(&id) {
    reactor::deregister(fd.as_fd());
  }
}

/// An fd kept in reserve for when the table is full (libuv's trick): without it a listener
/// that cannot accept stays readable and the reactor would spin on it.
static RESERVE: Mutex<Option<OwnedFd>> = Mutex::new(None);

fn keep_reserve() {
  let mut reserve = lock(&RESERVE);
  if reserve.is_none() {
    *reserve = nix::fcntl::open("/dev/null", nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty()).ok();
  }
}

/// Out of fds: frees the reserve, accepts one connection and closes it at once, so the client
/// sees a reset instead of waiting, then takes the reserve back.
fn shed_one(listener: RawFd) {
  lock(&RESERVE).take();
  if let Ok(conn) = socket::accept4(listener, SockFlag::SOCK_CLOEXEC) {
    // SAFETY: accept4 returned a new fd that nothing else owns; it is closed right away.
    drop(unsafe { OwnedFd::from_raw_fd(conn) });
  }
  keep_reserve();
}

pub fn on_ready(id: u32) {
  let Some(fd) = lock(&LISTENERS).get(&id).cloned() else { return };
  let mut accepted = Vec::new();
  while accepted.len() < ACCEPTS_PER_WAKE {
    match socket::accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
      // SAFETY: accept4 returned a new fd that nothing else owns.
      Ok(conn) => accepted.push(unsafe { OwnedFd::from_raw_fd(conn) }),
      Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
      Err(Errno::EMFILE | Errno::ENFILE) => {
        shed_one(fd.as_raw_fd());
        break;
      }
      // EAGAIN: drained; anything else is reported again by the next readiness.
      Err(_) => break,
    }
  }
  if !accepted.is_empty() {
    cluster::on_connections(id, accepted);
  }
}
