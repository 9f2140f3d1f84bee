//! Reads made while the workload ran, judged against the operations around them.
//!
//! The counters the readers watch get adds only, each of a positive delta, so a count can
//! only grow and the model gives plain bounds for each read (times are Unix milliseconds on
//! the checker's one clock, compared so that a rounding can only widen a bound):
//!
//! - never a transient duplicate: a read shows at most the adds that were not refused and
//!   were sent before its answer came;
//! - never behind an acknowledgement, where the counter type promises it (`accurate`
//!   everywhere; `eventual` on one instance, whose reads include every acknowledged add at
//!   once): a read shows at least the adds acknowledged before it was sent;
//! - never backwards, under the same promise: a read sent after another one's answer shows at
//!   least what that one showed.

use serde::Serialize;

use super::history::{Door, Mutation, Op, Outcome, Read};

/// What a read broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Broken {
    /// More than every add that could be in it.
    TransientDuplicate,
    /// Less than the adds acknowledged before it was sent.
    BehindAnAck,
    /// Less than a read answered before it was sent.
    Backwards,
}

/// One read that broke a rule, with the bound it broke.
#[derive(Debug, Clone, Serialize)]
pub struct LiveProblem {
    pub counter: usize,
    pub broken: Broken,
    pub read: i64,
    /// The most (for a duplicate) or the least (otherwise) the read could show.
    pub bound: i64,
    pub instance: usize,
    pub door: Door,
    pub invoked_ms: i64,
}

/// Which promises the counter's reads make besides "no duplicate".
#[derive(Debug, Clone, Copy)]
pub struct Promises {
    /// Reads include every add acknowledged before them, and so never go backwards.
    pub read_your_acks: bool,
}

/// Judges the reads of one add-only counter against its operations.
pub fn judge(ops: &[&Op], reads: &[&Read], promises: Promises) -> Vec<LiveProblem> {
    debug_assert!(ops.iter().all(|op| matches!(op.mutation, Mutation::Add(d) if d > 0)), "add-only counters");
    let delta = |op: &Op| match op.mutation {
        Mutation::Add(d) => d,
        Mutation::Clear => 0,
    };
    let mut problems = Vec::new();
    let problem = |read: &Read, broken, bound| LiveProblem {
        counter: read.counter,
        broken,
        read: read.value,
        bound,
        instance: read.instance,
        door: read.door,
        invoked_ms: read.invoked_ms,
    };
    for read in reads {
        let most: i64 = ops
            .iter()
            .filter(|op| op.outcome != Outcome::Refused && op.time_ms <= read.completed_ms)
            .map(|op| delta(op))
            .sum();
        if read.value > most {
            problems.push(problem(read, Broken::TransientDuplicate, most));
        }
        if promises.read_your_acks {
            let least: i64 = ops
                .iter()
                .filter(|op| op.outcome == Outcome::Acked && op.completed_ms < read.invoked_ms)
                .map(|op| delta(op))
                .sum();
            if read.value < least {
                problems.push(problem(read, Broken::BehindAnAck, least));
            }
        }
    }
    if promises.read_your_acks {
        let mut by_answer: Vec<&Read> = reads.to_vec();
        by_answer.sort_by_key(|r| r.completed_ms);
        let mut by_sending: Vec<&Read> = reads.to_vec();
        by_sending.sort_by_key(|r| r.invoked_ms);
        // Sweep reads in the order they were sent, keeping the largest count answered
        // strictly before each one was sent.
        let (mut answered, mut highest) = (0usize, i64::MIN);
        for read in by_sending {
            while answered < by_answer.len() && by_answer[answered].completed_ms < read.invoked_ms {
                highest = highest.max(by_answer[answered].value);
                answered += 1;
            }
            if read.value < highest {
                problems.push(problem(read, Broken::Backwards, highest));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(delta: i64, sent: i64, done: i64, outcome: Outcome) -> Op {
        Op {
            counter: 0,
            mutation: Mutation::Add(delta),
            token: format!("t{sent}"),
            time_ms: sent,
            completed_ms: done,
            door: Door::Grpc,
            outcome,
            attempts: 1,
            last_error: None,
        }
    }

    fn read(value: i64, sent: i64, done: i64) -> Read {
        Read { counter: 0, instance: 0, door: Door::Http, invoked_ms: sent, completed_ms: done, value }
    }

    fn broken(ops: &[Op], reads: &[Read], read_your_acks: bool) -> Vec<Broken> {
        let ops: Vec<&Op> = ops.iter().collect();
        let reads: Vec<&Read> = reads.iter().collect();
        judge(&ops, &reads, Promises { read_your_acks }).into_iter().map(|p| p.broken).collect()
    }

    #[test]
    fn reads_between_the_bounds_pass() {
        let ops = [add(3, 10, 20, Outcome::Acked), add(4, 30, 40, Outcome::Indeterminate)];
        // Before any add, during the first, after it, with or without the indeterminate one.
        let reads = [read(0, 0, 5), read(0, 15, 18), read(3, 25, 28), read(3, 45, 50), read(7, 45, 50)];
        assert_eq!(broken(&ops, &reads, true), []);
    }

    #[test]
    fn a_read_above_every_add_that_could_be_in_it_is_a_transient_duplicate() {
        let ops = [add(3, 10, 20, Outcome::Acked), add(4, 30, 40, Outcome::Refused)];
        assert_eq!(broken(&ops, &[read(6, 25, 28)], false), [Broken::TransientDuplicate], "counted twice");
        assert_eq!(broken(&ops, &[read(7, 45, 50)], false), [Broken::TransientDuplicate], "a refused add");
        assert_eq!(
            broken(&ops, &[read(3, 5, 9)], false),
            [Broken::TransientDuplicate],
            "an add not sent yet"
        );
    }

    #[test]
    fn a_read_behind_an_acknowledged_add_or_an_earlier_read_breaks_the_promise_where_made() {
        let ops = [add(3, 10, 20, Outcome::Acked), add(4, 30, 40, Outcome::Indeterminate)];
        assert_eq!(broken(&ops, &[read(0, 21, 25)], true), [Broken::BehindAnAck]);
        assert_eq!(broken(&ops, &[read(0, 21, 25)], false), [], "eventual on several instances");
        // The indeterminate add was seen, then not: a count went backwards.
        assert_eq!(broken(&ops, &[read(7, 41, 45), read(3, 46, 50)], true), [Broken::Backwards]);
        // Overlapping reads may disagree either way.
        assert_eq!(broken(&ops, &[read(7, 41, 47), read(3, 46, 50)], true), []);
    }
}
