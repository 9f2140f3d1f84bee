//! The checker's verdict: what the run did and how every counter read against the model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::doors::Counter;
use super::history::{Door, Op, Outcome};
use super::live::{Broken, LiveProblem};
use super::model::{self, Possible, Verdict};
use super::nemesis::{Fault, Injected};

/// What the report says about the run itself.
pub struct Run {
    pub store: String,
    pub instances: usize,
    pub clients: usize,
    pub seed: u64,
    pub ran: Duration,
}

/// How one counter ended.
#[derive(Debug, Serialize)]
pub struct Finding {
    namespace: String,
    counter: String,
    /// `None` when some instance could not be read.
    verdict: Option<Verdict>,
    /// The last count read from each instance (`null` if it could not be read).
    reads: Vec<Option<i64>>,
    /// Up to ten of the counts the model allows.
    allowed: Vec<i64>,
}

/// The run's result.
#[derive(Debug, Serialize)]
pub struct Report {
    store: String,
    instances: usize,
    clients: usize,
    seed: u64,
    duration_s: f64,
    operations: usize,
    acked: usize,
    refused: usize,
    indeterminate: usize,
    /// Operations that needed more than one attempt.
    retried: usize,
    acked_by_door: BTreeMap<Door, usize>,
    refused_by_code: BTreeMap<String, usize>,
    faults: BTreeMap<Fault, usize>,
    fault_log: Vec<Injected>,
    counters_checked: usize,
    ok: usize,
    lost: usize,
    duplicated: usize,
    wrong: usize,
    unreadable: usize,
    /// Seconds after the last operation until every counter read right on every instance.
    converged_after_s: Option<f64>,
    problems: Vec<Finding>,
    /// Reads of the add-only counters made while the workload ran.
    live_reads: usize,
    /// How many of them broke each rule (see `live`).
    live_broken: BTreeMap<Broken, usize>,
    /// The first twenty that broke one.
    live_problems: Vec<LiveProblem>,
    /// The operation log, kept when --dir was given or the check failed.
    pub history: Option<PathBuf>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.acked > 0 && self.ok == self.counters_checked && self.live_broken.is_empty()
    }

    /// Adds the verdict on the reads made while the workload ran.
    pub fn judge_live(&mut self, reads: usize, problems: Vec<LiveProblem>) {
        self.live_reads = reads;
        for p in &problems {
            *self.live_broken.entry(p.broken).or_default() += 1;
        }
        self.live_problems = problems.into_iter().take(20).collect();
    }

    pub fn print(&self) {
        println!(
            "tally check: {} on {} instance(s), {} clients over gRPC, HTTP and RESP, {:.0} s, seed {}",
            self.store, self.instances, self.clients, self.duration_s, self.seed
        );
        println!(
            "operations {}: acknowledged {}, refused {}, indeterminate {}; {} needed more than one attempt",
            self.operations, self.acked, self.refused, self.indeterminate, self.retried
        );
        println!("acknowledged by door: {:?}", self.acked_by_door);
        if !self.refused_by_code.is_empty() {
            println!("refused: {:?}", self.refused_by_code);
        }
        let faults: usize = self.faults.values().sum();
        println!("faults {faults}: {:?}", self.faults);
        println!(
            "counters checked {} on every instance: ok {}, lost {}, duplicated {}, wrong {}, unreadable {}",
            self.counters_checked, self.ok, self.lost, self.duplicated, self.wrong, self.unreadable
        );
        println!(
            "reads while running {}: transient duplicates {}, behind an acknowledged add {}, backwards {}",
            self.live_reads,
            self.live_broken.get(&Broken::TransientDuplicate).unwrap_or(&0),
            self.live_broken.get(&Broken::BehindAnAck).unwrap_or(&0),
            self.live_broken.get(&Broken::Backwards).unwrap_or(&0),
        );
        for p in &self.live_problems {
            println!(
                "  counter {} read {} through {} of instance {} at {} ms: {:?} (bound {})",
                p.counter, p.read, p.door, p.instance, p.invoked_ms, p.broken, p.bound
            );
        }
        match self.converged_after_s {
            Some(s) => println!("converged {s:.1} s after the last operation"),
            None => println!("did not converge"),
        }
        for p in &self.problems {
            println!(
                "  {}/{}: {:?}, read {:?}, allowed {:?}",
                p.namespace, p.counter, p.verdict, p.reads, p.allowed
            );
        }
        if let Some(history) = &self.history {
            println!("history: {}", history.display());
        }
        println!("{}", if self.passed() { "PASS" } else { "FAIL" });
    }

    /// Judges the last reads of every counter against the counts its history allows.
    pub fn new(
        run: Run,
        ops: &[Op],
        injected: Vec<Injected>,
        counters: &[(Counter, bool)],
        reads: &[Vec<Option<i64>>],
        possible: &[Possible],
        converged_after: Option<f64>,
    ) -> Self {
        let mut report = Report {
            store: run.store,
            instances: run.instances,
            clients: run.clients,
            seed: run.seed,
            duration_s: run.ran.as_secs_f64(),
            operations: ops.len(),
            acked: ops.iter().filter(|o| o.outcome == Outcome::Acked).count(),
            refused: ops.iter().filter(|o| o.outcome == Outcome::Refused).count(),
            indeterminate: ops.iter().filter(|o| o.outcome == Outcome::Indeterminate).count(),
            retried: ops.iter().filter(|o| o.attempts > 1).count(),
            acked_by_door: BTreeMap::new(),
            refused_by_code: BTreeMap::new(),
            faults: BTreeMap::new(),
            fault_log: injected,
            counters_checked: counters.len(),
            ok: 0,
            lost: 0,
            duplicated: 0,
            wrong: 0,
            unreadable: 0,
            converged_after_s: converged_after,
            problems: Vec::new(),
            live_reads: 0,
            live_broken: BTreeMap::new(),
            live_problems: Vec::new(),
            history: None,
        };
        for op in ops {
            match op.outcome {
                Outcome::Acked => *report.acked_by_door.entry(op.door).or_default() += 1,
                Outcome::Refused => {
                    let code = op.last_error.clone().unwrap_or_default();
                    *report.refused_by_code.entry(code).or_default() += 1;
                }
                Outcome::Indeterminate => {}
            }
        }
        for f in &report.fault_log {
            *report.faults.entry(f.fault).or_default() += 1;
        }
        for (c, (counter, _)) in counters.iter().enumerate() {
            let verdicts: Vec<Option<Verdict>> =
                reads[c].iter().map(|r| r.map(|v| model::judge(v, &possible[c]))).collect();
            let worst = if verdicts.iter().any(Option::is_none) {
                None
            } else {
                verdicts.iter().flatten().copied().find(|v| *v != Verdict::Ok).or(Some(Verdict::Ok))
            };
            match worst {
                Some(Verdict::Ok) => report.ok += 1,
                Some(Verdict::Lost) => report.lost += 1,
                Some(Verdict::Duplicated) => report.duplicated += 1,
                Some(Verdict::Wrong) => report.wrong += 1,
                None => report.unreadable += 1,
            }
            if worst != Some(Verdict::Ok) {
                let allowed = possible[c].iter().take(10).copied().collect();
                report.problems.push(Finding {
                    namespace: counter.namespace.clone(),
                    counter: counter.name.clone(),
                    verdict: worst,
                    reads: reads[c].clone(),
                    allowed,
                });
            }
        }
        report
    }
}
