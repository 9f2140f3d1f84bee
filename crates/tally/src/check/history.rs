//! What the checker's clients did: every operation, how it ended, and the log of it.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Serialize;

pub use tally_client::Door;

/// A counter mutation the checker sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mutation {
    Add(i64),
    Clear,
}

/// How an operation ended once the client stopped retrying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Some attempt was acknowledged: the mutation must be counted exactly once.
    Acked,
    /// Every attempt was refused with an answer that says nothing was written (or shed): the
    /// mutation must not be counted.
    Refused,
    /// Some attempt ended without an answer (a dropped connection, a timeout, `UNAVAILABLE`)
    /// and no later attempt was acknowledged: it may or may not be counted.
    Indeterminate,
}

/// One operation with its idempotency token, as the log records it.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// Index into the run's counters.
    pub counter: usize,
    pub mutation: Mutation,
    pub token: String,
    /// The token's `generation_time`, in Unix milliseconds: also when the operation was
    /// first sent.
    pub time_ms: i64,
    /// When the client stopped trying (Unix milliseconds): the acknowledgement, the refusal,
    /// or giving up.
    pub completed_ms: i64,
    pub door: Door,
    pub outcome: Outcome,
    pub attempts: u32,
    /// The last answer that was not an acknowledgement (`UNAVAILABLE`, `connection refused`, …),
    /// also for an operation acknowledged on a later attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A count read while the workload ran.
#[derive(Debug, Clone, Serialize)]
pub struct Read {
    /// Index into the run's counters.
    pub counter: usize,
    pub instance: usize,
    pub door: Door,
    /// When the read was sent and when its answer came (Unix milliseconds).
    pub invoked_ms: i64,
    pub completed_ms: i64,
    pub value: i64,
}

/// Every finished operation and every read made while the workload ran, in memory for the
/// model and as JSON lines on disk (reads as `{"read": ...}`).
pub struct History {
    ops: Mutex<Vec<Op>>,
    reads: Mutex<Vec<Read>>,
    log: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self {
            ops: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            log: Mutex::new(std::io::BufWriter::new(file)),
        })
    }

    pub fn record_read(&self, read: Read) {
        if let Ok(mut log) = self.log.lock()
            && let Ok(line) = serde_json::to_string(&serde_json::json!({ "read": &read }))
        {
            let _ = writeln!(log, "{line}");
        }
        if let Ok(mut reads) = self.reads.lock() {
            reads.push(read);
        }
    }

    pub fn record(&self, op: Op) {
        if let Ok(mut log) = self.log.lock() {
            // The in-memory history is what the check uses; a failed log line only costs the file.
            if let Ok(line) = serde_json::to_string(&op) {
                let _ = writeln!(log, "{line}");
            }
        }
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    pub fn len(&self) -> usize {
        self.ops.lock().map(|o| o.len()).unwrap_or(0)
    }

    pub fn acked(&self) -> usize {
        self.ops.lock().map(|o| o.iter().filter(|op| op.outcome == Outcome::Acked).count()).unwrap_or(0)
    }

    /// Flushes the log and hands over the operations and the reads.
    pub fn finish(self) -> anyhow::Result<(Vec<Op>, Vec<Read>)> {
        let mut log = self.log.into_inner().map_err(|_| anyhow::anyhow!("history log lock poisoned"))?;
        log.flush().context("cannot write the history log")?;
        let ops = self.ops.into_inner().map_err(|_| anyhow::anyhow!("history lock poisoned"))?;
        let reads = self.reads.into_inner().map_err(|_| anyhow::anyhow!("history lock poisoned"))?;
        Ok((ops, reads))
    }
}
