//! Tally's storage contract.
//!
//! Three traits, each with its contract on every method:
//! - [`EventLog`]: the immutable, idempotent log of counter events;
//! - [`CounterStore`]: per-counter state, the rollup checkpoint and the last-write time;
//! - [`NamespaceStore`]: namespace configurations.
//!
//! [`Store`] is all three; the engine holds an `Arc<dyn Store>`. [`MemoryStore`] is the
//! reference implementation, kept obviously right rather than fast. Every backend runs the
//! same conformance suite, [`store_suite!`], behind the `testsuite` feature, which also
//! has `faulty::FaultyStore` for injecting a slow or failing store into tests.

mod contract;
mod error;
#[cfg(feature = "testsuite")]
pub mod faulty;
mod memory;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use contract::{
    Appended, BatchAppend, CounterState, CounterStore, EventCursor, EventLog, IdentityCheck, NamespaceStore,
    Store, Stored, stored_event,
};
pub use error::{StoreError, StoreResult};
pub use memory::MemoryStore;
