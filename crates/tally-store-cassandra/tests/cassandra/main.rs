//! Tests against a real Cassandra node.
//!
//! They need a node at `TALLY_TEST_CASSANDRA` (for example `127.0.0.1:9042`, which
//! `bash scripts/cassandra.sh start` provides). Without that variable they fail with a message
//! saying so, rather than passing without having run: CI always sets it.

mod conformance;
mod namespaces;
mod slices;
mod support;
mod tokens;
