//! The keyspace's tables, created idempotently and versioned.
//!
//! Tables:
//! - `settings (name PRIMARY KEY, value)`: the schema version and the [`Layout`], written once
//!   with `IF NOT EXISTS` by whichever instance creates the keyspace, read by every other.
//! - `namespaces (name PRIMARY KEY, config, incarnation, recreate_after)`: namespace
//!   configurations as JSON, and which creation of the name is current; every row of a
//!   namespace's counters is stored under `name#incarnation` (the bare name for incarnation 0,
//!   namespaces created before schema version 2). A deleted namespace keeps its row without a
//!   configuration, with the time from which it may be created again (see `incarnations.rs`).
//! - `counters ((namespace, shard), counter)`: per counter, `last_write` written `USING
//!   TIMESTAMP` of the event's generation time (so the greatest time wins, whatever the arrival
//!   order) and `checkpoint` written `USING TIMESTAMP` of its `until` (so a checkpoint never
//!   moves backwards).
//! - `slices (kind, slice)`: which `events_<slice>` tables exist.
//! - `events_<slice> ((namespace, counter, time_bucket, event_bucket), generation_time,
//!   idempotency_token, mutation)`: the immutable event log, one table per time slice so that
//!   retention drops whole tables, newest first within a partition. The mutation (`add:<delta>`
//!   or `clear`) is part of the key so that a token reused for another mutation can never
//!   overwrite the stored one; the store refuses it instead (see `CassandraStore::append`).
//!
//! Every statement is `IF NOT EXISTS`, so any number of instances may run this at once; a
//! keyspace written by a newer schema version is refused instead of being misread.

use scylla::client::session::Session;

use tally_store::StoreResult;

use crate::driver::unavailable;
use crate::layout::{Layout, events_table};
use crate::options::CassandraOptions;

/// The schema this code reads and writes. Bump it with a migration when a table changes.
///
/// 2: `namespaces` gained `incarnation` and `recreate_after`. A build that knows only
/// version 1 would ignore incarnations, so it refuses a keyspace at version 2.
pub const SCHEMA_VERSION: i64 = 2;

/// Columns added to tables after version 1: table, column, CQL type.
const ADDED_COLUMNS: &[(&str, &str, &str)] =
    &[("namespaces", "incarnation", "bigint"), ("namespaces", "recreate_after", "bigint")];

/// Creates the keyspace and the fixed tables if missing and returns the layout in force.
pub async fn ensure(session: &Session, options: &CassandraOptions) -> Result<Layout, String> {
    let ks = &options.keyspace;
    let ddl = [
        format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
             {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            options.replication_factor
        ),
        format!("CREATE TABLE IF NOT EXISTS {ks}.settings (name text PRIMARY KEY, value bigint)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.namespaces (name text PRIMARY KEY, config text, \
             incarnation bigint, recreate_after bigint)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.counters (namespace text, shard int, counter text, \
             last_write bigint, checkpoint blob, PRIMARY KEY ((namespace, shard), counter))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.slices (kind text, slice bigint, PRIMARY KEY (kind, slice))"
        ),
        // Clients' tokens, taken by lightweight transactions for their idempotency window.
        // `until` (µs, by the instance's clock) decides; the TTL only collects them later.
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.tokens (namespace text, counter text, idempotency_token text, \
             generation_time bigint, mutation text, until bigint, PRIMARY KEY ((namespace, counter, idempotency_token)))"
        ),
    ];
    for statement in &ddl {
        schema_change(session, statement).await.map_err(|e| e.to_string())?;
    }
    add_missing_columns(session, ks).await?;
    let wanted = [
        ("schema_version", SCHEMA_VERSION),
        ("slice_micros", options.layout.slice_micros),
        ("time_bucket_micros", options.layout.time_bucket_micros),
        ("event_buckets", i64::from(options.layout.event_buckets)),
    ];
    for (name, value) in wanted {
        session
            .query_unpaged(
                format!("INSERT INTO {ks}.settings (name, value) VALUES (?, ?) IF NOT EXISTS"),
                (name, value),
            )
            .await
            .map_err(|e| format!("writing setting {name} in keyspace {ks}: {e}"))?;
    }
    let rows = session
        .query_unpaged(format!("SELECT name, value FROM {ks}.settings"), ())
        .await
        .map_err(|e| format!("reading settings of keyspace {ks}: {e}"))?
        .into_rows_result()
        .map_err(|e| format!("reading settings of keyspace {ks}: {e}"))?;
    let mut stored = std::collections::HashMap::new();
    for row in rows.rows::<(String, i64)>().map_err(|e| format!("settings of keyspace {ks}: {e}"))? {
        let (name, value) = row.map_err(|e| format!("settings of keyspace {ks}: {e}"))?;
        stored.insert(name, value);
    }
    let get =
        |name: &str| stored.get(name).copied().ok_or_else(|| format!("keyspace {ks} has no setting {name}"));
    let version = get("schema_version")?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "keyspace {ks} has schema version {version}; this build knows up to {SCHEMA_VERSION}. Upgrade Tally."
        ));
    }
    if version < SCHEMA_VERSION {
        // The columns were added above; from now on older builds refuse the keyspace.
        session
            .query_unpaged(
                format!("UPDATE {ks}.settings SET value = ? WHERE name = 'schema_version'"),
                (SCHEMA_VERSION,),
            )
            .await
            .map_err(|e| format!("raising the schema version of keyspace {ks}: {e}"))?;
        tracing::info!(keyspace = %ks, from = version, to = SCHEMA_VERSION, "upgraded the keyspace's schema");
    }
    let layout = Layout {
        slice_micros: get("slice_micros")?,
        time_bucket_micros: get("time_bucket_micros")?,
        event_buckets: i32::try_from(get("event_buckets")?).map_err(|e| format!("event_buckets: {e}"))?,
    };
    layout.validate().map_err(|e| format!("keyspace {ks} has an invalid layout: {e}"))?;
    if layout != options.layout {
        tracing::info!(keyspace = %ks, ?layout, "using the layout the keyspace was created with");
    }
    Ok(layout)
}

/// Adds the columns of [`ADDED_COLUMNS`] a keyspace made by an older build lacks.
async fn add_missing_columns(session: &Session, ks: &str) -> Result<(), String> {
    let rows = session
        .query_unpaged(
            "SELECT table_name, column_name FROM system_schema.columns WHERE keyspace_name = ?",
            (ks,),
        )
        .await
        .map_err(|e| format!("reading the columns of keyspace {ks}: {e}"))?
        .into_rows_result()
        .map_err(|e| format!("reading the columns of keyspace {ks}: {e}"))?;
    let mut present = std::collections::HashSet::new();
    for row in rows.rows::<(String, String)>().map_err(|e| format!("columns of keyspace {ks}: {e}"))? {
        present.insert(row.map_err(|e| format!("columns of keyspace {ks}: {e}"))?);
    }
    for (table, column, cql_type) in ADDED_COLUMNS {
        if !present.contains(&((*table).to_owned(), (*column).to_owned())) {
            let statement = format!("ALTER TABLE {ks}.{table} ADD {column} {cql_type}");
            schema_change(session, &statement).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Creates the events table of `slice` if missing and records it in `slices`.
pub async fn ensure_slice(session: &Session, keyspace: &str, slice: i64) -> StoreResult<()> {
    let table = events_table(slice);
    schema_change(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {keyspace}.{table} (namespace text, counter text, time_bucket bigint, \
             event_bucket int, generation_time bigint, idempotency_token text, mutation text, \
             PRIMARY KEY ((namespace, counter, time_bucket, event_bucket), generation_time, idempotency_token, mutation)) \
             WITH CLUSTERING ORDER BY (generation_time DESC, idempotency_token DESC, mutation DESC)"
        ),
    )
    .await?;
    session
        .query_unpaged(format!("INSERT INTO {keyspace}.slices (kind, slice) VALUES ('events', ?)"), (slice,))
        .await
        .map_err(|e| unavailable(&format!("recording slice {slice} in keyspace {keyspace}"), e))?;
    Ok(())
}

/// Drops the events table of `slice` and forgets it.
pub async fn drop_slice(session: &Session, keyspace: &str, slice: i64) -> StoreResult<()> {
    session
        .query_unpaged(format!("DELETE FROM {keyspace}.slices WHERE kind = 'events' AND slice = ?"), (slice,))
        .await
        .map_err(|e| unavailable(&format!("forgetting slice {slice} in keyspace {keyspace}"), e))?;
    schema_change(session, &format!("DROP TABLE IF EXISTS {keyspace}.{}", events_table(slice))).await
}

async fn schema_change(session: &Session, statement: &str) -> StoreResult<()> {
    session
        .query_unpaged(statement, ())
        .await
        .map_err(|e| unavailable(&format!("schema change `{statement}`"), e))?;
    session
        .await_schema_agreement()
        .await
        .map_err(|e| unavailable(&format!("schema agreement after `{statement}`"), e))?;
    Ok(())
}
