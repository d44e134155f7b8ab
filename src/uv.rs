//! The few libuv calls the core makes on a JavaScript thread's own event loop. Node exports
//! libuv; the functions are looked up in the running process when first needed, so the library
//! links (and its unit tests run) without it, and a host without them simply gets no loop hooks.
//!
//! Handles are opaque memory of `uv_handle_size` bytes whose first field is libuv's documented
//! `void* data`, left to the user.

use std::ffi::{c_int, c_void, CStr};

use once_cell::sync::OnceCell;

pub type Loop = c_void;
pub type Handle = c_void;
pub type Callback = unsafe extern "C" fn(*mut Handle);
pub type PollCallback = unsafe extern "C" fn(*mut Handle, c_int, c_int);

/// `uv_handle_type` values (stable across libuv 1.x).
pub const CHECK: c_int = 2;
pub const POLL: c_int = 8;
pub const PREPARE: c_int = 9;
/// `UV_READABLE`.
pub const READABLE: c_int = 1;

/// Declares `Uv`, one field per function, and `load`, which looks each up with its signature.
macro_rules! functions {
  ($($(#[$doc:meta])* $field:ident = $symbol:literal: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
    pub struct Uv {
      $($(#[$doc])* pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
    }

    fn load() -> Option<Uv> {
      // SAFETY: each symbol is cast to the signature libuv 1.x declares for it in uv.h.
      unsafe {
        Some(Uv {
          $($field: std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
            symbol($symbol)?,
          ),)*
        })
      }
    }
  };
}

functions! {
  handle_size = c"uv_handle_size": fn(c_int) -> usize;
  poll_init = c"uv_poll_init": fn(*mut Loop, *mut Handle, c_int) -> c_int;
  poll_start = c"uv_poll_start": fn(*mut Handle, c_int, PollCallback) -> c_int;
  prepare_init = c"uv_prepare_init": fn(*mut Loop, *mut Handle) -> c_int;
  prepare_start = c"uv_prepare_start": fn(*mut Handle, Callback) -> c_int;
  check_init = c"uv_check_init": fn(*mut Loop, *mut Handle) -> c_int;
  check_start = c"uv_check_start": fn(*mut Handle, Callback) -> c_int;
  unref = c"uv_unref": fn(*mut Handle);
  close = c"uv_close": fn(*mut Handle, Callback);
  /// The poll timeout the loop would use now, in ms: 0 when it will not block.
  backend_timeout = c"uv_backend_timeout": fn(*const Loop) -> c_int;
}

/// libuv as the host process exports it, or `None` (not Node, or a Node built without exports).
pub fn get() -> Option<&'static Uv> {
  static UV: OnceCell<Option<Uv>> = OnceCell::new();
  UV.get_or_init(load).as_ref()
}

fn symbol(name: &CStr) -> Option<*mut c_void> {
  // SAFETY: dlsym with RTLD_DEFAULT only reads the process's symbol tables.
  let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
  (!address.is_null()).then_some(address)
}

/// Memory for one handle of `kind`, 8-byte aligned as libuv's structs need.
pub fn handle_memory(uv: &Uv, kind: c_int) -> Box<[u64]> {
  // SAFETY: uv_handle_size only reads a table.
  let bytes = unsafe { (uv.handle_size)(kind) };
  vec![0u64; bytes.div_ceil(8)].into_boxed_slice()
}

/// Sets a handle's `data` field.
///
/// # Safety
/// `handle` must point to an initialized libuv handle.
pub unsafe fn set_data(handle: *mut Handle, data: *mut c_void) {
  // SAFETY: `data` is the first field of every uv_handle_t (the caller's promise).
  unsafe { *(handle as *mut *mut c_void) = data };
}

/// A handle's `data` field.
///
/// # Safety
/// `handle` must point to an initialized libuv handle.
pub unsafe fn data(handle: *mut Handle) -> *mut c_void {
  // SAFETY: as in `set_data`.
  unsafe { *(handle as *mut *mut c_void) }
}
