//! Tally's distributed store: the event log, counter state and namespaces on Apache Cassandra
//! (or ScyllaDB), shared by any number of Tally instances.
//!
//! - [`layout`]: where an event lives (slice table, time bucket, event bucket).
//! - [`schema`]: the tables, created idempotently and versioned.
//! - [`options`]: contact points, keyspace, consistency, timeouts; parsed from a `cassandra://` URL.
//! - [`store`]: [`CassandraStore`], the storage traits over CQL.

mod driver;
pub mod layout;
pub mod options;
pub mod schema;
pub mod store;

pub use layout::Layout;
pub use options::CassandraOptions;
pub use store::CassandraStore;
