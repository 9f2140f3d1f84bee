//! Clients' idempotency tokens on CQL: taken with a lightweight transaction, one partition
//! per counter and token.

use std::time::Duration;

use tally_core::{CounterKey, Event, Timestamp};
use tally_store::{Appended, EventLog, StoreError, StoreResult, Stored};

use crate::codec::{applied, decode_mutation, encode_mutation};
use crate::driver;
use crate::incarnations::Purpose;
use crate::store::CassandraStore;

/// What [`CassandraStore::take_token`] found.
pub(crate) enum Taken {
    /// This append took the token; its row says `until` (µs).
    Now { until: i64 },
    /// Another append holds it, with this mutation.
    Already(Stored),
}

impl CassandraStore {
    /// Takes the event's token for `window`, or finds the mutation that holds it, its namespace
    /// stored as `ns`. A token whose window has passed is taken over with a compare-and-set on
    /// its `until`.
    pub(crate) async fn take_token(&self, ns: &str, event: &Event, window: Duration) -> StoreResult<Taken> {
        let key = &event.key;
        let (counter, token) = (key.counter.as_str(), event.token.token());
        let time = event.token.generation_time().as_micros();
        let mutation = encode_mutation(event.kind);
        let context = format!("taking token {token:?} of {key}");
        // The TTL only collects rows; a minute past the window keeps clocks out of it.
        let ttl = i32::try_from(window.as_secs().saturating_add(60)).unwrap_or(i32::MAX);
        for _ in 0..3 {
            let now = self.clock.now();
            let until = now.saturating_add(window).as_micros();
            let values = (ns, counter, token, time, mutation.as_str(), until, ttl);
            let result = self
                .session
                .execute_unpaged(&self.fixed.token_take, values)
                .await
                .map_err(|e| driver::unavailable(&context, e))?;
            if applied(result).map_err(|e| driver::unavailable(&context, e))? {
                return Ok(Taken::Now { until });
            }
            let Some((held, held_until)) = self.token_row(key, token).await? else {
                continue; // collected by its TTL meanwhile: try again
            };
            if held_until > now {
                return Ok(Taken::Already(held));
            }
            let values = (ttl, time, mutation.as_str(), until, ns, counter, token, held_until.as_micros());
            let result = self
                .session
                .execute_unpaged(&self.fixed.token_retake, values)
                .await
                .map_err(|e| driver::unavailable(&context, e))?;
            if applied(result).map_err(|e| driver::unavailable(&context, e))? {
                return Ok(Taken::Now { until });
            }
        }
        Err(StoreError::Unavailable(format!("token {token:?} of {key} is contended; retry").into()))
    }

    /// Frees a token this append took but did not use (its deadline passed before the event
    /// was written). Best effort: a token left taken only makes later retries duplicates of an
    /// event that was never written, which they then write if their deadline allows.
    pub(crate) async fn release_token(&self, event: &Event, until: i64) {
        let key = &event.key;
        let stored = match self.stored_namespace(&key.namespace, Purpose::Read).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(counter = %key, error = %e, "could not free an unused token");
                return;
            }
        };
        let values = (stored.as_str(), key.counter.as_str(), event.token.token(), until);
        if let Err(e) = self.session.execute_unpaged(&self.fixed.token_release, values).await {
            tracing::warn!(counter = %key, error = %e, "could not free an unused token");
        }
    }

    /// What a token's row holds, and until when, read with serial consistency.
    pub(crate) async fn token_row(
        &self,
        key: &CounterKey,
        token: &str,
    ) -> StoreResult<Option<(Stored, Timestamp)>> {
        let stored = self.stored_namespace(&key.namespace, Purpose::Read).await?;
        let values = (stored.as_str(), key.counter.as_str(), token);
        let context = format!("reading token {token:?} of {key}");
        let result = self
            .session
            .execute_unpaged(&self.fixed.token_get, values)
            .await
            .map_err(|e| driver::unavailable(&context, e))?;
        let rows = result.into_rows_result().map_err(|e| driver::unavailable(&context, e))?;
        let Some(row) =
            rows.maybe_first_row::<(i64, String, i64)>().map_err(|e| driver::corrupt("tokens", e))?
        else {
            return Ok(None);
        };
        let (time, mutation, until) = row;
        let kind = decode_mutation(&mutation).map_err(|e| driver::corrupt("tokens", e))?;
        let stored = Stored { generation_time: Timestamp::from_micros(time), kind };
        Ok(Some((stored, Timestamp::from_micros(until))))
    }

    /// The answer to an append of a token another append holds with `stored`: a conflict, or a
    /// duplicate once the event it stands for is stored (the append that took the token may
    /// have failed before writing it). Rewriting the event is harmless (the same row); where
    /// its deadline has passed, the row is looked up instead, and a missing one is refused.
    pub(crate) async fn duplicate_of(
        &self,
        event: &Event,
        stored: Stored,
        deadline: Timestamp,
    ) -> StoreResult<Appended> {
        let answer = Appended::judge(event, stored)?;
        let (original, deadline) = stored.original(event, deadline)?;
        if self.before_deadline(&event.key, deadline).is_ok() {
            self.append_new(&original, deadline).await?;
            return Ok(answer);
        }
        let statements = self.slice(self.layout.slice_of(stored.generation_time), false).await?;
        let namespace = self.stored_namespace(&event.key.namespace, Purpose::Read).await?;
        match self.mutations_of(&statements, self.identity(&namespace, &original)).await?.is_empty() {
            false => Ok(answer),
            true => Err(StoreError::DeadlinePassed { key: event.key.clone(), deadline }),
        }
    }
}
