//! The prepared statements: on the fixed tables, prepared at open, and on each slice's events
//! table, prepared when the slice is first used.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::frame::types::{Consistency, SerialConsistency};
use scylla::statement::prepared::PreparedStatement;
use tally_store::StoreResult;

use crate::driver;

/// Prepared statements on the fixed tables.
pub(crate) struct Fixed {
    pub(crate) ns_create: PreparedStatement,
    pub(crate) ns_update: PreparedStatement,
    pub(crate) ns_get: PreparedStatement,
    pub(crate) ns_list: PreparedStatement,
    pub(crate) ns_delete: PreparedStatement,
    pub(crate) last_write: PreparedStatement,
    pub(crate) checkpoint_put: PreparedStatement,
    pub(crate) state_get: PreparedStatement,
    pub(crate) scan_shard: PreparedStatement,
    pub(crate) scan_namespaces: PreparedStatement,
    pub(crate) delete_shard: PreparedStatement,
    pub(crate) slices_in: PreparedStatement,
    pub(crate) token_take: PreparedStatement,
    pub(crate) token_retake: PreparedStatement,
    pub(crate) token_release: PreparedStatement,
    pub(crate) token_get: PreparedStatement,
}

/// Prepared statements on one slice's events table.
pub(crate) struct SliceStatements {
    pub(crate) insert: PreparedStatement,
    pub(crate) identity: PreparedStatement,
    pub(crate) range: PreparedStatement,
    pub(crate) delete_row: PreparedStatement,
    pub(crate) delete_partitions: PreparedStatement,
}

impl Fixed {
    /// Prepares every statement that names no slice: reads with `p`, writes with `w`.
    pub(crate) async fn prepare(p: &Preparer<'_>, w: &Preparer<'_>, ks: &str) -> StoreResult<Self> {
        Ok(Self {
                // A name never used, or deleted with this `recreate_after` (null for none).
                ns_create: w
                    .lwt(&format!(
                        "UPDATE {ks}.namespaces SET config = ?, incarnation = ?, recreate_after = null \
                         WHERE name = ? IF config = null AND recreate_after = ?"
                    ))
                    .await?,
                ns_update: w
                    .lwt(&format!("UPDATE {ks}.namespaces SET config = ? WHERE name = ? IF config != null"))
                    .await?,
                ns_get: p
                    .serial(&format!(
                        "SELECT config, incarnation, recreate_after FROM {ks}.namespaces WHERE name = ?"
                    ))
                    .await?,
                ns_list: p.plain(&format!("SELECT name, config FROM {ks}.namespaces")).await?,
                // A deleted namespace keeps its row, config null, as the marker of when it may
                // be created again and of which incarnation's rows are left to delete.
                ns_delete: w
                    .lwt(&format!(
                        "UPDATE {ks}.namespaces SET config = null, recreate_after = ? WHERE name = ? IF config != null"
                    ))
                    .await?,
                last_write: w
                    .plain(&format!(
                        "UPDATE {ks}.counters USING TIMESTAMP ? SET last_write = ? \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                checkpoint_put: w
                    .plain(&format!(
                        "UPDATE {ks}.counters USING TIMESTAMP ? SET checkpoint = ? \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                state_get: p
                    .plain(&format!(
                        "SELECT last_write, checkpoint FROM {ks}.counters \
                         WHERE namespace = ? AND shard = ? AND counter = ?"
                    ))
                    .await?,
                scan_shard: p
                    .plain(&format!(
                        "SELECT counter, last_write, checkpoint FROM {ks}.counters \
                         WHERE namespace = ? AND shard = ? AND counter > ? LIMIT ?"
                    ))
                    .await?,
                scan_namespaces: p.plain(&format!("SELECT DISTINCT namespace, shard FROM {ks}.counters")).await?,
                delete_shard: w
                    .plain(&format!("DELETE FROM {ks}.counters WHERE namespace = ? AND shard = ?"))
                    .await?,
                slices_in: p
                    .plain(&format!(
                        "SELECT slice FROM {ks}.slices WHERE kind = 'events' AND slice >= ? AND slice <= ?"
                    ))
                    .await?,
                token_take: w
                    .lwt(&format!(
                        "INSERT INTO {ks}.tokens (namespace, counter, idempotency_token, generation_time, mutation, until) \
                         VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"
                    ))
                    .await?,
                token_retake: w
                    .lwt(&format!(
                        "UPDATE {ks}.tokens USING TTL ? SET generation_time = ?, mutation = ?, until = ? \
                         WHERE namespace = ? AND counter = ? AND idempotency_token = ? IF until = ?"
                    ))
                    .await?,
                token_release: w
                    .lwt(&format!(
                        "DELETE FROM {ks}.tokens WHERE namespace = ? AND counter = ? AND idempotency_token = ? IF until = ?"
                    ))
                    .await?,
                token_get: p
                    .serial(&format!(
                        "SELECT generation_time, mutation, until FROM {ks}.tokens \
                         WHERE namespace = ? AND counter = ? AND idempotency_token = ?"
                    ))
                    .await?,
            })
    }
}

/// Prepares statements with the store's consistency and a timeout.
#[derive(Clone, Copy)]
pub(crate) struct Preparer<'a> {
    pub(crate) session: &'a Session,
    pub(crate) consistency: Consistency,
    pub(crate) timeout: Duration,
}

impl Preparer<'_> {
    pub(crate) async fn plain(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| driver::unavailable(&format!("preparing `{cql}`"), e))?;
        statement.set_consistency(self.consistency);
        statement.set_request_timeout(Some(self.timeout));
        Ok(statement)
    }

    /// A lightweight transaction: linearizable among its kind.
    pub(crate) async fn lwt(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self.plain(cql).await?;
        statement.set_serial_consistency(Some(SerialConsistency::LocalSerial));
        Ok(statement)
    }

    /// A read that sees every completed lightweight transaction.
    pub(crate) async fn serial(&self, cql: &str) -> StoreResult<PreparedStatement> {
        let mut statement = self.plain(cql).await?;
        statement.set_consistency(Consistency::LocalSerial);
        Ok(statement)
    }
}
