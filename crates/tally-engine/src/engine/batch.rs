//! `Engine::add_batch`: adds that arrive together (`BatchAddCount`, a run of adds in a Redis
//! pipeline), answered one by one and appended as one unit.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use tally_core::{CounterKey, CounterType, EventKind, IdempotencyToken, NamespaceConfig, Timestamp};
use tally_store::{BatchAppend, IdentityCheck};

use super::{Count, Engine, Mutated, Prepared, count_before_later, exact_of, finished};
use crate::error::{EngineError, EngineResult};
use crate::tail::StoreCheck;

/// One add of [`Engine::add_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAdd {
    /// The counter.
    pub key: CounterKey,
    /// What to add.
    pub delta: i64,
    /// The idempotency token; the server makes one when `None`.
    pub token: Option<IdempotencyToken>,
}

/// The adds of a batch that become one event.
struct Unit {
    /// The event's add: one of the batch, or the sum of tokenless adds to one counter.
    add: BatchAdd,
    /// The positions in the batch it answers (all of one counter, so of one namespace).
    members: Vec<usize>,
}

/// The events of a batch on their way to the store, and the batch positions each answers.
#[derive(Default)]
struct Staged {
    appends: Vec<BatchAppend>,
    members: Vec<Vec<usize>>,
    /// A hash of each staged client token with its counter: a second add of one client token
    /// is found without comparing each add with every staged event, which cost a batch of n
    /// adds n²/2 comparisons (each following four pointers). Server-made tokens are never
    /// repeated, so they are neither hashed nor looked for.
    tokens: HashSet<u64>,
}

impl Staged {
    /// Room for a batch of `adds` adds: its lists never grow while it is staged. The token
    /// set grows only with client tokens (a pipeline of tokenless adds never touches it).
    fn for_batch(adds: usize) -> Self {
        Self {
            appends: Vec::with_capacity(adds),
            members: Vec::with_capacity(adds),
            tokens: HashSet::default(),
        }
    }

    fn token_hash(&self, event: &tally_core::Event) -> u64 {
        let key = &event.key;
        self.tokens.hasher().hash_one((key.namespace.as_str(), key.counter.as_str(), event.token.token()))
    }

    /// Whether an event of the same counter with the same token string is staged.
    fn holds(&self, event: &tally_core::Event) -> bool {
        self.tokens.contains(&self.token_hash(event))
            && self
                .appends
                .iter()
                .any(|a| a.event.key == event.key && a.event.token.token() == event.token.token())
    }

    fn push(&mut self, append: BatchAppend, members: Vec<usize>) {
        if append.check != IdentityCheck::KnownNew {
            self.tokens.insert(self.token_hash(&append.event));
        }
        self.appends.push(append);
        self.members.push(members);
    }
}

/// What [`Engine::add_batch`] does with one event before the store.
enum Stage {
    Staged(BatchAppend),
    Answered(Mutated),
    Later,
}

/// Records what staging an event decided for the batch positions it answers.
fn settle(
    prepared: EngineResult<Stage>,
    members: Vec<usize>,
    staged: &mut Staged,
    answers: &mut [Option<EngineResult<Mutated>>],
) {
    match prepared {
        Ok(Stage::Staged(append)) => staged.push(append, members),
        Ok(Stage::Answered(mutated)) => members.iter().for_each(|&i| answers[i] = Some(Ok(mutated.clone()))),
        Ok(Stage::Later) => {}
        Err(e) => members.iter().for_each(|&i| answers[i] = Some(Err(e.clone()))),
    }
}

impl Engine {
    /// `BatchAddCount`, and the adds of a Redis pipeline: every add as
    /// [`Engine::add_and_get_count`] would make it, answered in order. On a store only this
    /// process writes, the durable adds go to the store together (one request to the embedded
    /// store's writer), and the count answered for each add includes the adds before it in
    /// the batch and none after it, as if they had been sent one by one. Tokenless adds to one
    /// durable counter become one event (each answers its token). One admission permit covers
    /// the batch.
    pub async fn add_batch(&self, adds: &[BatchAdd]) -> Vec<EngineResult<(Mutated, Count)>> {
        if let [add] = adds {
            // One add (an unpipelined Redis add, a batch of one item): nothing to stage together.
            return vec![self.add_and_get_count(&add.key, add.delta, add.token.clone()).await];
        }
        if !self.inner.tails.enabled() {
            let each = adds.iter().map(|a| self.add_and_get_count(&a.key, a.delta, a.token.clone()));
            return futures::future::join_all(each).await;
        }
        let _permit = match self.admit() {
            Ok(permit) => permit,
            Err(e) => return adds.iter().map(|_| Err(e.clone())).collect(),
        };
        let now = self.inner.clock.now();
        // Each add's namespace, looked up once per run of adds to it: a pipeline's adds nearly
        // always share one, and the registry's look-up (a lock, a hash) was a twentieth of a
        // hot-key pipeline's request-thread time when made for every add.
        let mut configs: Vec<EngineResult<Arc<NamespaceConfig>>> = Vec::with_capacity(adds.len());
        for (i, add) in adds.iter().enumerate() {
            let config = match i.checked_sub(1) {
                Some(before) if adds[before].key.namespace == add.key.namespace => configs[before].clone(),
                _ => self.config_for_write(&add.key.namespace).await,
            };
            configs.push(config);
        }
        let mut answers: Vec<Option<EngineResult<Mutated>>> = adds.iter().map(|_| None).collect();
        let mut staged = Staged::for_batch(adds.len());
        for unit in merge_tokenless(adds, &configs) {
            let config = &configs[unit.members[0]];
            let prepared = self.stage_add(&unit.add, config, now, &staged).await;
            match prepared {
                // The sum would overflow although each add alone might not: stage them one by one.
                Err(EngineError::Overflow { .. }) if unit.members.len() > 1 => {
                    for &i in &unit.members {
                        let alone = self.stage_add(&adds[i], config, now, &staged).await;
                        settle(alone, vec![i], &mut staged, &mut answers);
                    }
                }
                prepared => settle(prepared, unit.members, &mut staged, &mut answers),
            }
        }
        let results = self.inner.store.append_batch(&staged.appends).await;
        // Each counter's exact count once its last event of the batch is finished: it counts
        // every add of the batch to it, which is what the answers are worked out from.
        let mut known: HashMap<&CounterKey, i64> = HashMap::with_capacity(staged.appends.len());
        for ((append, members), result) in staged.appends.iter().zip(&staged.members).zip(results) {
            let event = &append.event;
            let outcome = match &configs[members[0]] {
                Ok(config) => self.settle(event, config, &result, now),
                Err(_) => finished(&result),
            };
            match exact_of(Some(self.inner.tails.finish(event, outcome))) {
                Some(count) => known.insert(&event.key, count),
                None => known.remove(&event.key),
            };
            let answer = match (&configs[members[0]], result) {
                (Ok(config), Ok(appended)) => Ok(self.appended(event, config, appended, now)),
                (_, Err(e)) => Err(EngineError::from(e)),
                (Err(e), Ok(_)) => Err(e.clone()),
            };
            for &i in members {
                answers[i] = Some(answer.clone());
            }
        }
        // A repeat of a token in flight (earlier in this batch, or in another request) is
        // answered once the first attempt has its answer.
        for (i, add) in adds.iter().enumerate() {
            if answers[i].is_none() {
                known.remove(&add.key);
                answers[i] = Some(self.add_count_admitted(&add.key, add.delta, add.token.clone()).await);
            }
        }
        self.batch_counts(adds, &configs, answers, known).await
    }

    /// Prepares one event of a batch: answered at once (a `best_effort` counter, a retry memory
    /// knows, a refusal), staged for the store, or left for later (its token is in flight).
    async fn stage_add(
        &self,
        add: &BatchAdd,
        config: &EngineResult<Arc<NamespaceConfig>>,
        now: Timestamp,
        staged: &Staged,
    ) -> EngineResult<Stage> {
        let config = config.as_ref().map_err(Clone::clone)?;
        if config.counter_type == CounterType::BestEffort {
            self.inner.best_effort.add(&add.key, add.delta, config.best_effort_ttl, now).await?;
            return Ok(Stage::Answered(Mutated { token: None, applied: true }));
        }
        let made = self.event_of(&add.key, config, EventKind::Add(add.delta), add.token.clone(), now);
        let (event, server_made) = match made {
            Ok(made) => made,
            Err(refused) => return Ok(Stage::Answered(self.answer_retry_or(refused, config, now).await?)),
        };
        // A token the server made for this add is in no other event.
        if !server_made && staged.holds(&event) {
            return Ok(Stage::Later);
        }
        match self.begin_append(&event, config, server_made, StoreCheck::Needed, now).await? {
            Prepared::Answered(appended) => Ok(Stage::Answered(self.appended(&event, config, appended, now))),
            Prepared::Append(check) => {
                let deadline = config.commit_deadline(event.token.generation_time());
                Ok(Stage::Staged(BatchAppend { event, deadline, check }))
            }
            // Rare (memory is full): appended alone, outside the batch.
            Prepared::Untracked => {
                let deadline = config.commit_deadline(event.token.generation_time());
                let appended = self.inner.store.append(&event, deadline, config.token_window()).await?;
                Ok(Stage::Answered(self.appended(&event, config, appended, now)))
            }
        }
    }

    /// The counts a batch answers: each add's counter after the batch, less the adds to it
    /// that come later in the batch. `known`: counters whose exact count after the batch
    /// memory answered already; each other counter is read once.
    async fn batch_counts<'a>(
        &self,
        adds: &'a [BatchAdd],
        configs: &[EngineResult<Arc<NamespaceConfig>>],
        answers: Vec<Option<EngineResult<Mutated>>>,
        mut known: HashMap<&'a CounterKey, i64>,
    ) -> Vec<EngineResult<(Mutated, Count)>> {
        let now = self.inner.clock.now();
        let mut later: HashMap<&CounterKey, i128> = HashMap::with_capacity(adds.len());
        let mut out = Vec::with_capacity(adds.len());
        for ((add, config), answer) in adds.iter().zip(configs).zip(answers).rev() {
            let answer =
                answer.unwrap_or_else(|| Err(EngineError::Internal("batch add left unanswered".into())));
            let answer = match (answer, config) {
                (Ok(mutated), Ok(config)) if config.counter_type == CounterType::BestEffort => {
                    let value = self.inner.best_effort.get(&add.key, now).await;
                    value.map(|value| {
                        (mutated, Count { value, counter_type: config.counter_type, as_of: Some(now) })
                    })
                }
                (Ok(mutated), Ok(config)) => {
                    let after = later.entry(&add.key).or_default();
                    let count = self.count_in_batch(&mut known, add, config, &mutated, *after, now).await;
                    if mutated.applied {
                        *after += i128::from(add.delta);
                    }
                    count.map(|count| (mutated, count))
                }
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(e.clone()),
            };
            out.push(answer);
        }
        out.reverse();
        out
    }
}

impl Engine {
    /// [`Engine::count_after_add`] for one add of a batch, reading each counter's exact count
    /// from memory once per batch (`known` holds those read or answered already). `now`: the
    /// clock read once for the batch's answers.
    async fn count_in_batch<'a>(
        &self,
        known: &mut HashMap<&'a CounterKey, i64>,
        add: &'a BatchAdd,
        config: &NamespaceConfig,
        mutated: &Mutated,
        later: i128,
        now: Timestamp,
    ) -> EngineResult<Count> {
        if let Some(&exact) = known.get(&add.key) {
            return Ok(count_before_later(exact, later, config.counter_type, now));
        }
        let local = self.local_count(&add.key, config).await?;
        if let Some(exact) = local {
            known.insert(&add.key, exact);
        }
        self.count_after_add(&add.key, config, add.delta, mutated, local, later).await
    }
}

/// Groups the batch into the events it becomes: the adds without a token to one durable
/// counter are one event of their summed delta (a server-made token cannot be retried, so
/// nothing tells them apart, and a pipeline of `INCR k` then costs the store one write); every
/// other add is an event of its own.
fn merge_tokenless(adds: &[BatchAdd], configs: &[EngineResult<Arc<NamespaceConfig>>]) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::with_capacity(adds.len());
    let mut open: HashMap<&CounterKey, usize> = HashMap::with_capacity(adds.len());
    for (i, (add, config)) in adds.iter().zip(configs).enumerate() {
        let durable = config.as_ref().is_ok_and(|c| c.counter_type.is_durable());
        if add.token.is_none() && durable {
            if let Some(&u) = open.get(&add.key)
                && let Some(sum) = units[u].add.delta.checked_add(add.delta)
            {
                units[u].add.delta = sum;
                units[u].members.push(i);
                continue;
            }
            open.insert(&add.key, units.len());
        }
        units.push(Unit { add: add.clone(), members: vec![i] });
    }
    units
}
