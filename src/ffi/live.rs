//! The addresses of the models and strings lowbit has handed out and not yet taken back, so
//! that using a freed model, or freeing a model or string twice, is reported instead of
//! corrupting memory.
//!
//! The guard is exact except for one case it cannot tell apart: when the allocator has reused
//! a freed address for a newer object of the same kind, a stale pointer to it looks live.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// A set of live addresses of one kind of object. A B-tree rather than a hash set: its nodes
/// are referenced by their start address, so leak checkers (valgrind) see them as reachable at
/// exit instead of "possibly lost" through a hash table's interior pointer.
pub(crate) struct Registry {
    addresses: Mutex<BTreeSet<usize>>,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            addresses: Mutex::new(BTreeSet::new()),
        }
    }

    fn with<R>(&self, body: impl FnOnce(&mut BTreeSet<usize>) -> R) -> R {
        // A panic while the lock is held cannot leave the set half-updated (each operation is
        // one insert, remove or lookup), so a poisoned lock is still usable.
        let mut guard = self
            .addresses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        body(&mut guard)
    }

    /// Records `ptr` as handed out.
    pub(crate) fn insert<T>(&self, ptr: *const T) {
        self.with(|set| set.insert(ptr as usize));
    }

    /// Whether `ptr` was handed out and not yet taken back.
    pub(crate) fn contains<T>(&self, ptr: *const T) -> bool {
        self.with(|set| set.contains(&(ptr as usize)))
    }

    /// Takes `ptr` back; false when it was not live (never handed out, or freed already).
    pub(crate) fn remove<T>(&self, ptr: *const T) -> bool {
        self.with(|set| set.remove(&(ptr as usize)))
    }
}

/// Models made by the load functions and not yet passed to `lowbit_model_free`.
pub(crate) static MODELS: Registry = Registry::new();

/// Strings returned to the caller and not yet passed to `lowbit_string_free`.
pub(crate) static STRINGS: Registry = Registry::new();
