//! Locks that shrug off poisoning: the one place that decides it.
//!
//! A handler that panics while a lock is held poisons it. The state behind every lock
//! in this crate stays consistent across such a panic (critical sections are short and
//! leave no half-made change behind), so the guard is taken anyway.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// [`Mutex::lock`] that returns the guard even when the lock is poisoned.
pub(crate) trait MutexExt<T: ?Sized> {
    /// Locks, ignoring poisoning.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`RwLock::read`] and [`RwLock::write`] that return the guard even when the lock is
/// poisoned.
pub(crate) trait RwLockExt<T: ?Sized> {
    /// Locks for reading, ignoring poisoning.
    fn reading(&self) -> RwLockReadGuard<'_, T>;
    /// Locks for writing, ignoring poisoning.
    fn writing(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockExt<T> for RwLock<T> {
    fn reading(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn writing(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}
