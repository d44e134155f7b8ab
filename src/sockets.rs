//! Sockets the primary creates for its workers, bound as Node's primary binds them for a worker's
//! `listen()`: TCP with no host tries `::` (dual stack) before `0.0.0.0`, SO_REUSEADDR as libuv
//! sets it, unix paths as given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
  self, bind, getsockname, setsockopt, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
  SockaddrStorage, UnixAddr,
};
use serde_json::{json, Value};

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
  let fd =
    socket::socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
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

/// A CLOEXEC duplicate of an fd that someone else owns.
pub fn duplicate(fd: RawFd) -> Result<OwnedFd, Errno> {
  // SAFETY: F_DUPFD_CLOEXEC on a caller-supplied fd; failure is reported, never assumed.
  let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
  if copy < 0 {
    return Err(Errno::last());
  }
  // SAFETY: `copy` is a new fd that nothing else owns.
  Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}
