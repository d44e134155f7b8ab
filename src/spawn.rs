//! Starting a child process: fork, then only async-signal-safe calls until exec.
//!
//! Node is multithreaded, so everything that allocates (argv, envp, the fd plan, candidate paths)
//! is built before `fork`. The child then resets signal state as libuv does, moves its fds into
//! place, closes every other fd it inherited, drops privileges, and execs. An exec failure is
//! reported through a CLOEXEC pipe, so spawn errors are known before `spawn` returns.
//!
//! Every fork happens on one spawner thread that lives as long as the process: a parent-death
//! signal (`PR_SET_PDEATHSIG`) fires when the *thread* that forked exits, and the caller may be a
//! worker_thread that ends long before its children.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::{self, Sender};
use std::sync::Mutex;
use std::thread;

use nix::errno::Errno;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use once_cell::sync::OnceCell;

use crate::lock::lock;

/// What the child gets at one fd number.
pub enum Stdio {
  /// A new socketpair; the parent keeps the other end (Node's 'pipe').
  Pipe,
  /// A socketpair that carries the IPC channel.
  Ipc,
  /// The parent's fd with this number ('inherit' is the same index; a number is that fd).
  Fd(RawFd),
  /// `/dev/null` for 0–2, nothing above.
  Ignore,
}

pub struct Options {
  pub file: String,
  pub args: Vec<String>,
  pub env: Vec<String>,
  pub cwd: Option<String>,
  pub stdio: Vec<Stdio>,
  pub uid: Option<u32>,
  pub gid: Option<u32>,
  pub detached: bool,
  /// Signal the child receives when the spawning thread dies (cluster workers).
  pub death_signal: Option<i32>,
}

pub struct Spawned {
  pub pid: i32,
  /// The parent's ends, by stdio index: `Some` for `Pipe` and `Ipc` entries.
  pub parent_ends: Vec<Option<OwnedFd>>,
}

/// How the child must arrange one fd: take `source` (a parent fd) to `target`, or close `target`.
struct Slot {
  target: RawFd,
  source: Option<RawFd>,
}

type Job = (Options, Sender<Result<Spawned, Errno>>);

static SPAWNER: OnceCell<Mutex<Sender<Job>>> = OnceCell::new();

/// Spawns on the spawner thread and waits for the outcome.
pub fn spawn(opts: Options) -> Result<Spawned, Errno> {
  let spawner = SPAWNER.get_or_try_init(|| {
    let (jobs, queue) = mpsc::channel::<Job>();
    thread::Builder::new()
      .name("rust-cluster-spawner".into())
      .spawn(move || {
        for (opts, reply) in queue {
          let _ = reply.send(fork_exec(&opts));
        }
      })
      .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN)))?;
    Ok::<_, Errno>(Mutex::new(jobs))
  })?;
  let (reply, outcome) = mpsc::channel();
  lock(spawner).send((opts, reply)).map_err(|_| Errno::EAGAIN)?;
  outcome.recv().unwrap_or(Err(Errno::EAGAIN))
}

fn fork_exec(opts: &Options) -> Result<Spawned, Errno> {
  let argv = cstrings(&opts.args)?;
  let envp = cstrings(&opts.env)?;
  let candidates = cstrings(&executable_candidates(&opts.file, &opts.env))?;
  let cwd = opts.cwd.as_deref().map(CString::new).transpose().map_err(|_| Errno::EINVAL)?;
  let argv_ptrs = null_terminated(&argv);
  let envp_ptrs = null_terminated(&envp);

  let mut parent_ends = Vec::with_capacity(opts.stdio.len());
  let mut child_ends = Vec::new();
  let mut slots = Vec::with_capacity(opts.stdio.len());
  for (index, entry) in opts.stdio.iter().enumerate() {
    let target = index as RawFd;
    let (parent, source) = match entry {
      Stdio::Pipe | Stdio::Ipc => {
        let (parent, child) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)?;
        if matches!(entry, Stdio::Ipc) {
          set_nonblocking(parent.as_raw_fd())?;
        }
        let source = child.as_raw_fd();
        child_ends.push(child);
        (Some(parent), Some(source))
      }
      Stdio::Fd(fd) => (None, Some(*fd)),
      Stdio::Ignore if index < 3 => {
        let null = nix::fcntl::open(
          "/dev/null",
          nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
          nix::sys::stat::Mode::empty(),
        )?;
        let source = null.as_raw_fd();
        child_ends.push(null);
        (None, Some(source))
      }
      Stdio::Ignore => (None, None),
    };
    parent_ends.push(parent);
    slots.push(Slot { target, source });
  }
  let first_free = slots.len().max(3) as RawFd;
  let max_fd = max_open_fds();

  let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
  let parent_pid = std::process::id() as libc::pid_t;

  // Block every signal across fork so no Node handler runs in the child before it resets them.
  // SAFETY: sigset_t is plain data, and all-zero is a valid value that sigfillset overwrites.
  let (mut all, mut previous): (libc::sigset_t, libc::sigset_t) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
  // SAFETY: plain libc calls on stack-allocated sigsets.
  unsafe {
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
  }
  let plan = ChildPlan {
    slots: &mut slots,
    first_free,
    max_fd,
    candidates: &candidates,
    argv: &argv_ptrs,
    envp: &envp_ptrs,
    cwd: cwd.as_ref(),
    opts,
    parent_pid,
    report: err_write.as_raw_fd(),
  };
  // SAFETY: fork has no preconditions; the child branch only runs `child`, below.
  let pid = unsafe { libc::fork() };
  if pid == 0 {
    // SAFETY: we are the forked child, and everything the plan points at was built before fork.
    unsafe { child(plan) }
  }
  let fork_errno = Errno::last();
  // SAFETY: restores the mask saved above.
  unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut()) };
  if pid < 0 {
    return Err(fork_errno);
  }
  drop(err_write);
  drop(child_ends);

  let mut code = [0u8; 4];
  let n = read_full(&err_read, &mut code);
  if n == 4 {
    // The child could not exec and has exited: reap it now so it never becomes a zombie.
    // SAFETY: waiting for our own child by pid; it has exited or is about to.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    return Err(Errno::from_raw(i32::from_ne_bytes(code)));
  }
  Ok(Spawned { pid, parent_ends })
}

struct ChildPlan<'a> {
  slots: &'a mut [Slot],
  first_free: RawFd,
  max_fd: RawFd,
  candidates: &'a [CString],
  argv: &'a [*const libc::c_char],
  envp: &'a [*const libc::c_char],
  cwd: Option<&'a CString>,
  opts: &'a Options,
  parent_pid: libc::pid_t,
  report: RawFd,
}

/// Runs in the forked child: resets signals, arranges fds, drops privileges, execs.
///
/// # Safety
/// Only in the child of `fork`, with every pointer in `plan` built before the fork. The process
/// may have had other threads, so only async-signal-safe calls are made, and nothing allocates.
unsafe fn child(plan: ChildPlan<'_>) -> ! {
  // SAFETY: each call below is an async-signal-safe libc function, given fds and memory that
  // were prepared before fork; every failure ends in `_exit`, never a return to Rust code.
  unsafe {
    let last_errno = || *libc::__errno_location();
    let report_to = |fd: RawFd, errno: i32| -> ! {
      libc::write(fd, errno.to_ne_bytes().as_ptr().cast(), 4);
      libc::_exit(127)
    };

    for sig in 1..=64 {
      if sig != libc::SIGKILL && sig != libc::SIGSTOP {
        libc::signal(sig, libc::SIG_DFL);
      }
    }
    if plan.opts.detached && libc::setsid() < 0 {
      report_to(plan.report, last_errno());
    }
    if let Some(sig) = plan.opts.death_signal {
      libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong);
      // The parent may have died before the prctl took effect.
      if libc::getppid() != plan.parent_pid {
        libc::_exit(1);
      }
    }

    // Lift the report pipe and every source above the target range first, so no dup2 can
    // clobber one of them.
    let report = libc::fcntl(plan.report, libc::F_DUPFD_CLOEXEC, plan.first_free);
    if report < 0 {
      report_to(plan.report, last_errno());
    }
    let fail = |errno: i32| -> ! { report_to(report, errno) };
    for slot in plan.slots.iter_mut() {
      if let Some(source) = slot.source {
        let moved = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, plan.first_free);
        if moved < 0 {
          fail(last_errno());
        }
        slot.source = Some(moved);
      }
    }
    for slot in plan.slots.iter() {
      match slot.source {
        // dup2 leaves the new fd without CLOEXEC, which is what the child should inherit.
        Some(source) => {
          if libc::dup2(source, slot.target) < 0 {
            fail(last_errno());
          }
        }
        None => {
          libc::close(slot.target);
        }
      }
    }
    for fd in 0..3.min(plan.slots.len() as RawFd) {
      let flags = libc::fcntl(fd, libc::F_GETFL);
      if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
      }
    }
    // Everything else the parent had open stays behind; the error pipe is CLOEXEC already.
    close_from(plan.first_free, plan.max_fd, report);

    if plan.opts.uid.is_some() || plan.opts.gid.is_some() {
      // As libuv: supplementary groups go; failure here (not root) is left to setuid/setgid.
      libc::setgroups(0, std::ptr::null());
    }
    if let Some(gid) = plan.opts.gid {
      if libc::setgid(gid) < 0 {
        fail(last_errno());
      }
    }
    if let Some(uid) = plan.opts.uid {
      if libc::setuid(uid) < 0 {
        fail(last_errno());
      }
    }
    if let Some(cwd) = plan.cwd {
      if libc::chdir(cwd.as_ptr()) < 0 {
        fail(last_errno());
      }
    }
    let empty: libc::sigset_t = std::mem::zeroed();
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

    let mut errno = libc::ENOENT;
    for path in plan.candidates {
      libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
      // As execvp does: remember a permission error, but keep looking after a missing file.
      match last_errno() {
        libc::ENOENT | libc::ENOTDIR => {}
        libc::EACCES => errno = libc::EACCES,
        other => fail(other),
      }
    }
    fail(errno)
  }
}

/// Closes every fd from `first` up, except `keep` (which is CLOEXEC and reports exec failures).
///
/// # Safety
/// Closes fds that other code may own: only for a forked child about to exec.
unsafe fn close_from(first: RawFd, max_fd: RawFd, keep: RawFd) {
  let ranges = [(first, keep - 1), (keep + 1, RawFd::MAX)];
  for (low, high) in ranges {
    if low > high {
      continue;
    }
    // SAFETY: close_range and close take plain integers; the caller owns the whole range.
    unsafe {
      if libc::syscall(libc::SYS_close_range, low as libc::c_uint, high as libc::c_uint, 0) < 0 {
        for fd in low..high.min(max_fd) {
          libc::close(fd);
        }
      }
    }
  }
}

fn max_open_fds() -> RawFd {
  // SAFETY: sysconf has no preconditions.
  let n = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
  if n > 0 {
    n.min(1 << 20) as RawFd
  } else {
    1024
  }
}

/// Where exec looks for `file`: itself when it has a slash, else each `PATH` entry, taken from
/// the child's environment as libuv does.
fn executable_candidates(file: &str, env: &[String]) -> Vec<String> {
  if file.contains('/') {
    return vec![file.to_owned()];
  }
  let path = env
    .iter()
    .find_map(|e| e.strip_prefix("PATH="))
    .map(str::to_owned)
    .or_else(|| std::env::var("PATH").ok())
    .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
  path.split(':').map(|dir| if dir.is_empty() { file.to_owned() } else { format!("{dir}/{file}") }).collect()
}

fn cstrings(items: &[String]) -> Result<Vec<CString>, Errno> {
  items.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| Errno::EINVAL)).collect()
}

fn null_terminated(items: &[CString]) -> Vec<*const libc::c_char> {
  items.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

fn set_nonblocking(fd: RawFd) -> Result<(), Errno> {
  // SAFETY: fcntl on an fd we own.
  let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
  // SAFETY: as above, setting the flags just read plus O_NONBLOCK.
  if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
    return Err(Errno::last());
  }
  Ok(())
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
  let mut got = 0;
  while got < buf.len() {
    match nix::unistd::read(fd, &mut buf[got..]) {
      Ok(0) => break,
      Ok(n) => got += n,
      Err(Errno::EINTR) => continue,
      Err(_) => break,
    }
  }
  got
}
