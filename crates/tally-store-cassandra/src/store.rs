//! [`CassandraStore`]: the storage traits over CQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::frame::types::Consistency;
use tally_core::{Clock, CounterKey, Timestamp};
use tally_store::{StoreError, StoreResult};
use tokio::sync::Mutex;

use crate::layout::Layout;
use crate::options::CassandraOptions;
use crate::schema;
use crate::statements::{Fixed, Preparer, SliceStatements};

/// How many statements one operation keeps in flight at once.
pub(crate) const FAN_OUT: usize = 16;
/// Folds spanning fewer slices than this skip the slice listing.
pub(crate) const DIRECT_SLICES: i64 = 4;

/// The store on an Apache Cassandra or ScyllaDB cluster. Any number of Tally instances may
/// share one keyspace.
///
/// How the contract is kept:
/// - Clients' tokens: an append takes its token with a lightweight transaction on the
///   `tokens` table (one partition per counter and token, so nothing hot is serialised but
///   retries of one mutation). Exactly one of racing appends of a token takes it; the others
///   read what it holds and answer `Duplicate` or `Conflict`. The event row is written after
///   the token is taken, so an append that fails between the two leaves a token without its
///   event: a later duplicate writes the event row on its behalf (the same row, with the
///   stored generation time, so it is never counted twice) before it answers. Server-made
///   tokens (`append_new`) take nothing.
/// - Deadline: an event is sent only if `now + write_timeout <= deadline`; the driver gives up
///   at `write_timeout` and the cluster drops writes older than its own request timeouts, so no
///   event lands after its deadline (assuming clocks agree within the namespace's clock skew).
/// - `last_write` and checkpoints are written `USING TIMESTAMP` of the time they carry, so the
///   greatest wins on every replica regardless of arrival order.
pub struct CassandraStore {
    pub(crate) session: Arc<Session>,
    pub(crate) keyspace: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) layout: Layout,
    pub(crate) write_timeout: Duration,
    pub(crate) consistency: Consistency,
    pub(crate) fixed: Fixed,
    pub(crate) slices: Mutex<HashMap<i64, Arc<SliceStatements>>>,
    pub(crate) incarnations: crate::incarnations::Incarnations,
}

impl CassandraStore {
    /// Connects, creates the keyspace and tables if missing, and prepares the statements.
    pub async fn open(options: CassandraOptions, clock: Arc<dyn Clock>) -> Result<Self, String> {
        options.layout.validate()?;
        let session = SessionBuilder::new()
            .known_nodes(&options.nodes)
            .connection_timeout(Duration::from_secs(5))
            .build()
            .await
            .map_err(|e| format!("connecting to Cassandra at {}: {e}", options.nodes.join(",")))?;
        let layout = schema::ensure(&session, &options).await?;
        let ks = options.keyspace.clone();
        let p =
            Preparer { session: &session, consistency: options.consistency, timeout: options.read_timeout };
        let w = Preparer { timeout: options.write_timeout, ..p };
        let fixed = Fixed::prepare(&p, &w, &ks).await.map_err(|e| e.to_string())?;
        Ok(Self {
            session: Arc::new(session),
            keyspace: ks,
            clock,
            layout,
            write_timeout: options.write_timeout,
            consistency: options.consistency,
            fixed,
            slices: Mutex::new(HashMap::new()),
            incarnations: Default::default(),
        })
    }

    /// The partitioning in force in this keyspace.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `DeadlinePassed` unless a write sent now is sure to be answered before `deadline`.
    pub(crate) fn before_deadline(&self, key: &CounterKey, deadline: Timestamp) -> StoreResult<()> {
        if self.clock.now().saturating_add(self.write_timeout) > deadline {
            return Err(StoreError::DeadlinePassed { key: key.clone(), deadline });
        }
        Ok(())
    }
}
