//! The client tokens the writer took lately, so that the caller of an append looks its token
//! up itself and the writer thread need not read the `tokens` keyspace again.
//!
//! Taking a token is "look it up, and if it is free, write it in the commit of its event".
//! The writer is the one thread every durable write waits for, so the look-up moved to the
//! caller's task, where both cores share it:
//! 1. the caller notes the last commit it can see ([`Published::current`]) and then reads the
//!    token from the store; if it is taken, the caller answers without the writer;
//! 2. if it is free, the writer still has to know whether a commit made *after* the noted one
//!    took it meanwhile. It remembers, for its latest commits, which tokens each one took (by
//!    a hash of the token's key): that is a map lookup, not a seek through memtables.
//!
//! When memory cannot tell (the noted commit is older than what it remembers, or a hash
//! matches, which may be another token's) the writer reads the store as before. So the answer
//! is always the one a look-up inside the writer would give; only its cost moves.
//!
//! Why a caller's read is enough up to the noted commit: the writer publishes a commit's
//! number only after fjall's commit returned, and fjall makes a batch visible to reads only
//! after its journal write is synced. A token a reader finds is durable, with its event.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The number of the last commit whose writes every read now sees. Shared with callers.
#[derive(Debug, Default)]
pub(crate) struct Published(AtomicU64);

impl Published {
    /// Read before looking a token up: every commit up to this one is visible to that read.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// What the writer remembers of the tokens its latest commits took.
pub(crate) struct TakenTokens {
    /// For each remembered token (by hash of its key), the last commit that took it.
    by_hash: HashMap<u64, u64>,
    /// The remembered commits, oldest first, with the hashes each took.
    commits: VecDeque<(u64, Vec<u64>)>,
    /// Hashes in `commits`, and the most it keeps.
    held: usize,
    capacity: usize,
    /// Commits at or before this one are no longer remembered (or, after a failed commit,
    /// cannot be trusted): a caller that looked before it needs the store read again.
    forgotten_through: u64,
    /// The number of the last commit (or failed commit) the writer finished.
    last: u64,
    published: Arc<Published>,
}

impl TakenTokens {
    /// Remembers the tokens of up to about `capacity` takings.
    pub fn new(capacity: usize) -> Self {
        Self {
            by_hash: HashMap::new(),
            commits: VecDeque::new(),
            held: 0,
            capacity: capacity.max(1),
            forgotten_through: 0,
            last: 0,
            published: Arc::new(Published::default()),
        }
    }

    /// The handle callers read the last published commit from.
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// The hash tokens are remembered by.
    pub fn hash(token_key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(token_key)
    }

    /// Whether a token the caller found free after commit `checked` may have been taken
    /// since, so that the writer must read the store to know.
    pub fn may_be_taken_since(&self, hash: u64, checked: u64) -> bool {
        debug_assert!(checked <= self.last, "a caller cannot have seen a commit not yet made");
        checked < self.forgotten_through || self.by_hash.get(&hash).is_some_and(|&commit| commit > checked)
    }

    /// Records a successful commit that took the tokens with these hashes, then publishes it.
    /// Call after fjall's commit returned, so that every read after [`Published::current`]
    /// sees it.
    pub fn committed(&mut self, hashes: Vec<u64>) {
        let commit = self.last + 1;
        if !hashes.is_empty() {
            for &hash in &hashes {
                self.by_hash.insert(hash, commit);
            }
            self.held += hashes.len();
            self.commits.push_back((commit, hashes));
            while self.held > self.capacity {
                self.forget_oldest();
            }
        }
        self.publish(commit);
    }

    /// Forgets everything, after a commit that failed: what it wrote may or may not be in the
    /// reopened database, so every caller that looked before now must be checked in the store.
    /// Call after the database is closed.
    pub fn forget_all(&mut self) {
        let commit = self.last + 1;
        self.by_hash.clear();
        self.commits.clear();
        self.held = 0;
        self.forgotten_through = commit;
        self.publish(commit);
    }

    fn forget_oldest(&mut self) {
        let Some((commit, hashes)) = self.commits.pop_front() else { return };
        for hash in &hashes {
            if self.by_hash.get(hash) == Some(&commit) {
                self.by_hash.remove(hash);
            }
        }
        self.held -= hashes.len();
        self.forgotten_through = self.forgotten_through.max(commit);
    }

    fn publish(&mut self, commit: u64) {
        debug_assert!(commit > self.last, "commit numbers only grow");
        self.last = commit;
        self.published.0.store(commit, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_taken_after_the_callers_look_is_sent_to_the_store() {
        let mut taken = TakenTokens::new(16);
        let seen = taken.published().current();
        taken.committed(vec![7]);
        assert!(taken.may_be_taken_since(7, seen), "taken by a commit the caller did not see");
        assert!(!taken.may_be_taken_since(8, seen), "another token was not taken");
        let after = taken.published().current();
        assert!(!taken.may_be_taken_since(7, after), "the caller's own read saw this commit");
    }

    #[test]
    fn a_look_older_than_memory_is_sent_to_the_store() {
        let mut taken = TakenTokens::new(2);
        let seen = taken.published().current();
        taken.committed(vec![1, 2]);
        taken.committed(vec![3]);
        // Commit 1 was forgotten to make room: a caller from before it cannot be cleared.
        assert!(taken.may_be_taken_since(99, seen));
        assert!(!taken.may_be_taken_since(99, taken.published().current()));
    }

    #[test]
    fn after_a_failed_commit_every_earlier_look_is_sent_to_the_store() {
        let mut taken = TakenTokens::new(16);
        taken.committed(vec![1]);
        let seen = taken.published().current();
        taken.forget_all();
        assert!(taken.may_be_taken_since(42, seen));
        assert!(!taken.may_be_taken_since(42, taken.published().current()));
    }
}
