//! The global allocator (mimalloc, the default feature `mimalloc`) and its one setting.
//!
//! This is the only module of the workspace with `unsafe` code: two calls into mimalloc's C
//! API, which has no safe Rust wrapper for its options.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mi_option_e` (`mimalloc.h`): milliseconds before freed memory
/// goes back to the system; `-1` keeps it. The test below checks this index holds mimalloc's
/// default for that option.
const PURGE_DELAY: c_int = 15;
/// The environment variables mimalloc reads for that option when the process starts.
const PURGE_DELAY_VARIABLES: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];

unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Keeps freed memory for reuse instead of returning it to the system a second after it is
/// freed, unless the environment sets the purge delay itself.
///
/// By default mimalloc gives back what was freed a second earlier (fjall's flushed memtables,
/// the writer's batches) and faults it in again, zeroed, when load needs it: under a RESP
/// pipeline of random keys a tenth of the request threads' time went to the kernel zeroing
/// those pages (BENCHMARKS.md, "The binary keeps freed memory"). The price is a higher peak
/// of resident memory, which the process then keeps.
pub(crate) fn keep_freed_memory() {
    if PURGE_DELAY_VARIABLES.iter().any(|name| std::env::var_os(name).is_some()) {
        return;
    }
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; the index is in
    // the table (checked by the test below) and every value is allowed for this option.
    unsafe { mi_option_set(PURGE_DELAY, -1) }
}

/// The purge delay mimalloc uses now, in milliseconds (`-1`: never).
#[cfg(test)]
fn purge_delay() -> c_long {
    // SAFETY: `mi_option_get` reads an integer from mimalloc's option table; the index is in it.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_names_mimallocs_purge_delay_and_is_kept_off() {
        if PURGE_DELAY_VARIABLES.iter().any(|name| std::env::var_os(name).is_some()) {
            return; // the environment decides; nothing here to check
        }
        // 1,000 ms is mimalloc's default for this option and for no option next to it.
        assert_eq!(purge_delay(), 1000, "mimalloc's option {PURGE_DELAY} is not the purge delay");
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
