//! How C handles map to Rust values, stated once (after rustls-ffi src/ffi.rs).
//!
//! A C handle type is an opaque zero-sized struct (`pub struct dw_bridge { _private: [u8; 0] }`,
//! so the header says only `typedef struct dw_bridge dw_bridge;`). [`Castable`] names the Rust
//! value behind it and whether C holds it as an `Arc` or a `Box`; the helpers here are the only
//! code that casts between the two.
//!
//! Only `Arc` ownership exists so far (`dw_bridge`: shared by every thread of the monolith, and
//! kept alive by a call in progress even if another thread frees the handle meanwhile). A
//! `Box`-owned type would add an `OwnershipBox` marker and its two helpers here.

use std::sync::Arc;

/// Marker: C holds an `Arc<RustType>` through the handle pointer.
pub(crate) struct OwnershipArc;

/// A C handle type and the Rust value it stands for.
pub(crate) trait Castable {
    /// [`OwnershipArc`] (or a future `OwnershipBox`).
    type Ownership;
    type RustType;
}

/// Give C a new reference to `value`; C must hand it back to [`free_arc`] exactly once.
pub(crate) fn arc_into_raw<C>(value: Arc<C::RustType>) -> *mut C
where
    C: Castable<Ownership = OwnershipArc>,
{
    Arc::into_raw(value) as *mut C
}

/// A new reference to the value behind a handle, for the length of a call; `None` for NULL.
///
/// # Safety
/// `handle` is NULL or came from [`arc_into_raw`] and has not been passed to [`free_arc`].
pub(crate) unsafe fn clone_arc<C>(handle: *const C) -> Option<Arc<C::RustType>>
where
    C: Castable<Ownership = OwnershipArc>,
{
    if handle.is_null() {
        return None;
    }
    let p = handle as *const C::RustType;
    // SAFETY: by the contract above, `p` came from Arc::into_raw and C's reference is live.
    unsafe {
        Arc::increment_strong_count(p);
        Some(Arc::from_raw(p))
    }
}

/// Drop C's reference; NULL is ignored.
///
/// # Safety
/// `handle` is NULL or came from [`arc_into_raw`] and has not been passed here before.
pub(crate) unsafe fn free_arc<C>(handle: *const C)
where
    C: Castable<Ownership = OwnershipArc>,
{
    if !handle.is_null() {
        // SAFETY: by the contract above.
        drop(unsafe { Arc::from_raw(handle as *const C::RustType) });
    }
}

/// `let b = try_clone_arc!(bridge);`: the value behind a handle argument, or return
/// `DW_NULL_PARAMETER` naming the argument. Use inside [`ffi_boundary!`].
macro_rules! try_clone_arc {
    ($handle:ident) => {
        match $crate::ffi::handle::clone_arc($handle) {
            Some(v) => v,
            None => return Err($crate::ffi::error::Failure::null(stringify!($handle))),
        }
    };
}
