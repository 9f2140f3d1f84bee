//! Tally's distributed store: the event log, counter state and namespaces on Apache Cassandra
//! (or ScyllaDB), shared by any number of Tally instances.
//!
//! - [`layout`]: where an event lives (slice table, time bucket, event bucket).
//! - [`schema`]: the tables, created idempotently and versioned.
//! - [`options`]: contact points, keyspace, consistency, timeouts; parsed from a `cassandra://` URL.
//! - [`store`]: [`CassandraStore`]: opening it, and how it keeps the storage contract; its
//!   jobs each in a file of their own: `events` (the slices' event tables), `tokens` (clients'
//!   idempotency tokens), `counters` (`last_write`, checkpoints, the counter scan),
//!   `namespaces`, `incarnations` (which creation of a namespace its rows belong to),
//!   `statements` (the prepared statements), `codec` (values in columns) and
//!   `driver` (the driver's errors).

mod codec;
mod counters;
mod driver;
mod events;
mod incarnations;
pub mod layout;
mod namespaces;
pub mod options;
pub mod schema;
mod statements;
pub mod store;
mod tokens;

pub use layout::Layout;
pub use options::CassandraOptions;
pub use store::CassandraStore;
