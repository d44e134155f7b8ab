//! Mutex access that survives a panic elsewhere.
//!
//! A panic on the reactor thread is caught and reported for the one channel it concerns; the
//! shared tables it may have been holding stay usable rather than poisoning every later call.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
  mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
