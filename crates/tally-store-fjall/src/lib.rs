//! The embedded store: Tally on one machine with no other service.
//!
//! [`FjallStore`] keeps everything in one fjall database in a data directory:
//! - keyspace `events`: one entry per event, keyed so that a counter's events sort by
//!   `(generation_time, token)` ([`key_codec`]);
//! - keyspace `tokens`: each client token a counter's append took, with its mutation, kept for
//!   the namespace's idempotency window;
//! - keyspace `last_write` and `checkpoints`: per-counter state;
//! - keyspace `namespaces`: namespace configurations as JSON;
//! - keyspace `meta`: the on-disk format version.
//!
//! Every mutation goes through one writer thread ([`group_commit`]) that takes whatever
//! requests queued while the previous batch was syncing and commits them with one `fdatasync`.
//! The single writer also makes the read-check-write steps (idempotency, `last_write = max`,
//! checkpoints that never move backwards) atomic without locks. Reads go straight to fjall,
//! and so does the look-up of a client's token, on the caller's task: the writer then checks
//! only the commits made since, from memory ([`taken_tokens`](crate::taken_tokens)).
//! After a failed write the database is closed and reopened (`handles.rs`), so the store
//! recovers from a full disk without a restart.

mod group_commit;
mod handles;
pub mod key_codec;
mod presence;
mod recent_state;
mod staged;
mod store;
mod taken_tokens;

pub use store::{FjallOptions, FjallStore};
