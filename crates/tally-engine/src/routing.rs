//! Rollup routing: which instance rolls a counter up when several share a store.
//!
//! Correctness never depends on it. A rollup is a fold from the stored checkpoint plus a
//! checkpoint write that never moves backwards, so a rollup on the "wrong" instance, or on two
//! at once, is only duplicate work. Routing exists to make that the exception: with a peer
//! list, each counter's triggers go to one owner chosen by rendezvous hashing, so the rollups
//! of a counter written through every instance run once, on one instance.

use tally_core::{CounterKey, Timestamp};
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Queues a rollup on this instance: what a router falls back to.
pub type LocalTrigger = std::sync::Arc<dyn Fn(&CounterKey, Timestamp) + Send + Sync>;

/// Takes rollup triggers for counters this instance does not own.
///
/// Contract: `route` either takes the trigger (returns `true`) and sees that the counter is
/// rolled up somewhere, or returns `false` and the caller triggers the rollup locally. A router
/// that cannot reach the owner falls back to a local trigger itself or returns `false`.
pub trait RollupRouter: Send + Sync {
    /// Offers the trigger of `key`, due at `due`.
    fn route(&self, key: &CounterKey, due: Timestamp) -> bool;
}

/// Rendezvous (highest random weight) hashing over a fixed peer list: every instance with the
/// same list picks the same owner for a counter, and removing one peer moves only its counters.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    peers: Vec<String>,
}

impl Rendezvous {
    /// Hashing over `peers` (any stable names, such as `host:port`).
    pub fn new(peers: Vec<String>) -> Self {
        Self { peers }
    }

    /// The peers, in the order given.
    pub fn peers(&self) -> &[String] {
        &self.peers
    }

    /// The index of the peer that owns `key`; `None` without peers.
    pub fn owner(&self, key: &CounterKey) -> Option<usize> {
        let seed = xxh3_64_with_seed(key.counter.as_str().as_bytes(), 0);
        let key_hash = xxh3_64_with_seed(key.namespace.as_str().as_bytes(), seed);
        self.peers
            .iter()
            .enumerate()
            .max_by_key(|(_, peer)| (xxh3_64_with_seed(peer.as_bytes(), key_hash), peer.as_str()))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<CounterKey> {
        (0..n).map(|i| CounterKey::parse_joined(&format!("ns:c{i}")).expect("key")).collect()
    }

    #[test]
    fn owners_are_spread_and_the_same_for_every_instance() {
        let peers: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:7090")).collect();
        let (a, b) = (Rendezvous::new(peers.clone()), Rendezvous::new(peers));
        let mut per_peer = [0usize; 3];
        for key in keys(3000) {
            let owner = a.owner(&key).expect("owner");
            assert_eq!(b.owner(&key), Some(owner));
            per_peer[owner] += 1;
        }
        assert!(per_peer.iter().all(|&n| (800..=1200).contains(&n)), "{per_peer:?}");
    }

    #[test]
    fn removing_a_peer_moves_only_its_counters() {
        let peers: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
        let all = Rendezvous::new(peers.clone());
        let without_p2 = Rendezvous::new(peers.iter().filter(|p| *p != "p2").cloned().collect());
        for key in keys(2000) {
            let before = &all.peers()[all.owner(&key).expect("owner")];
            let after = &without_p2.peers()[without_p2.owner(&key).expect("owner")];
            if before != "p2" {
                assert_eq!(before, after, "{key} moved although its owner stayed");
            }
        }
        assert_eq!(Rendezvous::new(Vec::new()).owner(&keys(1)[0]), None);
    }
}
