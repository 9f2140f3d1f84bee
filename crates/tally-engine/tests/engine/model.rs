//! Property test: random interleavings of adds (new, retried, reused, outside the window),
//! clears, reads, rollups and time, checked against a plain model of the event log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tally_core::{
    Clock, CounterType, EventKind, IdempotencyToken, ManualClock, Namespace, NamespaceConfig, Timestamp,
    WindowError,
};
use tally_engine::EngineError;
use tally_store::{MemoryStore, Store};
use tally_store_fjall::{FjallOptions, FjallStore};

use crate::support::{START_MILLIS, TestEngine, key};

const COUNTERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A new mutation generated `age_ms` ago (negative: in the future).
    New {
        counter: usize,
        kind: EventKind,
        age_ms: i64,
    },
    /// The resend of an earlier mutation, with its generation time or restamped `restamp_ms`
    /// later (as clients that stamp every attempt do).
    Retry {
        of: usize,
        restamp_ms: Option<i64>,
    },
    /// An earlier mutation's token reused for another delta.
    Reuse {
        of: usize,
        delta: i64,
    },
    Get {
        counter: usize,
    },
    Advance {
        ms: u64,
    },
    RunRollups,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![8 => (-1000i64..1000).prop_map(EventKind::Add), 1 => Just(EventKind::Clear)];
    prop_oneof![
        10 => (0..COUNTERS, kind, prop_oneof![9 => 0i64..4000, 1 => -1500i64..7000])
            .prop_map(|(counter, kind, age_ms)| Op::New { counter, kind, age_ms }),
        4 => (any::<usize>(), prop_oneof![2 => Just(None), 1 => (0i64..3000).prop_map(Some)])
            .prop_map(|(of, restamp_ms)| Op::Retry { of, restamp_ms }),
        1 => (any::<usize>(), -5i64..5).prop_map(|(of, delta)| Op::Reuse { of, delta }),
        3 => (0..COUNTERS).prop_map(|counter| Op::Get { counter }),
        4 => (0u64..2500).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::RunRollups),
    ]
}

/// The model: every event the engine acknowledged as applied, per counter, in event order,
/// and the tokens they took, with the mutation and when each was taken.
#[derive(Default)]
struct Model {
    events: Vec<BTreeMap<(Timestamp, String), EventKind>>,
    tokens: Vec<BTreeMap<String, (EventKind, Timestamp)>>,
}

impl Model {
    fn count(&self, counter: usize, before: Timestamp) -> i64 {
        let mut count = 0i64;
        for ((time, _), kind) in &self.events[counter] {
            if *time >= before {
                break;
            }
            match kind {
                EventKind::Add(d) => count += d,
                EventKind::Clear => count = 0,
            }
        }
        count
    }
}

async fn run(ops: Vec<Op>, store: Arc<dyn Store>, clock: ManualClock) -> Result<(), TestCaseError> {
    // A store only this engine writes reads every acknowledged event at once, whatever the
    // type; a shared one reads the checkpoint for eventual counters.
    let exclusive = store.exclusive();
    let t = TestEngine::over(store, clock).await;
    let config = NamespaceConfig { counter_type: CounterType::Accurate, ..Default::default() };
    let ns_types = [("acc", CounterType::Accurate), ("ev", CounterType::Eventual)];
    let mut namespaces = Vec::new();
    for (name, ty) in ns_types {
        let ns = Namespace::new(name).expect("ns");
        t.engine
            .create_namespace(&ns, NamespaceConfig { counter_type: ty, ..config.clone() })
            .await
            .expect("ns");
        namespaces.push(ns);
    }
    let mut model =
        Model { events: vec![BTreeMap::new(); COUNTERS], tokens: vec![BTreeMap::new(); COUNTERS] };
    let mut sent: Vec<(usize, IdempotencyToken, EventKind)> = Vec::new();

    for (i, op) in ops.into_iter().enumerate() {
        let now = t.clock.now();
        let mutation = match op {
            Op::New { counter, kind, age_ms } => {
                let time = Timestamp::from_micros(now.as_micros() - age_ms * 1000);
                Some((counter, IdempotencyToken::new(&format!("op{i}"), time).expect("token"), kind))
            }
            Op::Retry { of, restamp_ms } if !sent.is_empty() => {
                let (counter, token, kind) = sent[of % sent.len()].clone();
                let token = match restamp_ms {
                    None => token,
                    Some(ms) => {
                        let time = Timestamp::from_micros(token.generation_time().as_micros() + ms * 1000);
                        IdempotencyToken::new(token.token(), time).expect("token")
                    }
                };
                Some((counter, token, kind))
            }
            Op::Reuse { of, delta } if !sent.is_empty() => {
                let (counter, token, kind) = sent[of % sent.len()].clone();
                let other = match kind {
                    EventKind::Add(d) => EventKind::Add(d.wrapping_add(delta) | 1),
                    EventKind::Clear => EventKind::Add(delta),
                };
                Some((counter, token, other))
            }
            Op::Retry { .. } | Op::Reuse { .. } => None,
            Op::Get { counter } => {
                let exact = model.count(counter, Timestamp::MAX);
                let acc = t.engine.get_count(&key(&namespaces[0], &counter.to_string())).await.expect("get");
                prop_assert_eq!(acc.value, exact, "accurate read of counter {}", counter);
                let ev = t.engine.get_count(&key(&namespaces[1], &counter.to_string())).await.expect("get");
                if exclusive {
                    prop_assert_eq!(ev.value, exact, "eventual read on one instance of counter {}", counter);
                } else {
                    let as_of = ev.as_of.unwrap_or(Timestamp::MIN);
                    prop_assert_eq!(
                        ev.value,
                        model.count(counter, as_of),
                        "eventual read is exact as of {}",
                        as_of
                    );
                }
                None
            }
            Op::Advance { ms } => {
                t.clock.advance(Duration::from_millis(ms));
                None
            }
            Op::RunRollups => {
                t.engine.rollups().run_due().await;
                None
            }
        };
        let Some((counter, token, kind)) = mutation else { continue };
        sent.push((counter, token.clone(), kind));
        let slot = (token.generation_time(), token.token().to_owned());
        // The token alone identifies a mutation for the idempotency window after it was taken,
        // whatever generation time a retry carries; one from the future is refused first.
        let taken = model.tokens[counter]
            .get(token.token())
            .filter(|(_, at)| now < at.saturating_add(config.idempotency_window));
        let expected = match (config.check_window(token.generation_time(), now), taken) {
            (Err(WindowError::TooNew { .. }), _) => "window",
            (_, Some((stored, _))) if *stored == kind => "duplicate",
            (_, Some(_)) => "reused",
            (Err(_), None) => "window",
            (Ok(()), None) => "new",
        };
        for ns in &namespaces {
            let k = key(ns, &counter.to_string());
            let result = match kind {
                EventKind::Add(delta) => t.engine.add_count(&k, delta, Some(token.clone())).await,
                EventKind::Clear => t.engine.clear_count(&k, Some(token.clone())).await,
            };
            let got = match &result {
                Ok(m) if m.applied => "new",
                Ok(_) => "duplicate",
                Err(EngineError::TokenTooOld { .. } | EngineError::TokenInFuture { .. }) => "window",
                Err(EngineError::TokenReused { .. }) => "reused",
                Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
            };
            prop_assert_eq!(got, expected, "{:?} on {} at {}", kind, k, now);
        }
        if expected == "new" {
            model.events[counter].insert(slot, kind);
            model.tokens[counter].insert(token.token().to_owned(), (kind, now));
        }
    }

    t.converge(&config).await;
    for counter in 0..COUNTERS {
        let exact = model.count(counter, Timestamp::MAX);
        for ns in &namespaces {
            let k = key(ns, &counter.to_string());
            prop_assert_eq!(t.engine.get_count(&k).await.expect("get").value, exact, "converged {}", k);
        }
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_millis(START_MILLIS))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn memory_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = clock();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(Arc::new(clock.clone())));
        runtime().block_on(run(ops, store, clock))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn shared_memory_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = clock();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::shared(Arc::new(clock.clone())));
        runtime().block_on(run(ops, store, clock))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn fjall_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let clock = clock();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = FjallStore::open(dir.path(), Arc::new(clock.clone()), FjallOptions::default()).expect("open");
        let store: Arc<dyn Store> = Arc::new(store);
        runtime().block_on(run(ops, store, clock))?;
    }
}
