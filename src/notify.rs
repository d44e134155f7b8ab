//! systemd's notification protocol (sd_notify(3)): one datagram of `VAR=VALUE` lines to the unix
//! socket `NOTIFY_SOCKET` names. Node has no unix datagram sockets; sent from this process, the
//! datagram carries its own credentials, which the default `NotifyAccess=main` requires of the
//! main PID.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{sendto, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// Sends `message` to the socket at `path` (`@name`: the abstract namespace), without blocking.
pub fn notify(path: &str, message: &str) -> Result<(), Errno> {
  let address = match path.strip_prefix('@') {
    Some(name) => UnixAddr::new_abstract(name.as_bytes())?,
    None => UnixAddr::new(path)?,
  };
  let socket = socket(AddressFamily::Unix, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
  sendto(socket.as_raw_fd(), message.as_bytes(), &address, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)?;
  Ok(())
}

#[cfg(test)]
mod tests {
  use super::*;
  use std::os::unix::net::UnixDatagram;

  #[test]
  fn one_datagram_to_a_path_or_an_abstract_name() {
    let dir = std::env::temp_dir().join(format!("rc-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let receiver = UnixDatagram::bind(&path).unwrap();
    notify(path.to_str().unwrap(), "READY=1\nSTATUS=up").unwrap();
    let mut buf = [0u8; 64];
    let n = receiver.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");
    std::fs::remove_dir_all(&dir).unwrap();

    let name = format!("rc-notify-{}", std::process::id());
    let abstract_receiver = {
      use std::os::linux::net::SocketAddrExt;
      let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
      UnixDatagram::bind_addr(&addr).unwrap()
    };
    notify(&format!("@{name}"), "STOPPING=1").unwrap();
    let n = abstract_receiver.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert_eq!(notify("/nonexistent/notify.sock", "READY=1"), Err(Errno::ENOENT));
  }
}
