//! The model: which counts a counter may show, given the operations the clients logged.
//!
//! The server orders a counter's events by `(generation_time, token)`, and a clear removes
//! everything ordered before it. The checker chose both, so the count the acknowledged
//! operations make is known exactly. An indeterminate operation may or may not have been
//! written, so every subset of them is a possible history; there are few of them (one per
//! client at most per fault), and past [`MAX_INDETERMINATE`] per counter the counter is
//! reported as not checkable rather than guessed.

use std::collections::BTreeSet;

use serde::Serialize;

use super::history::{Mutation, Op, Outcome};

/// Past this many indeterminate operations on one counter, 2^n histories are too many to list.
pub const MAX_INDETERMINATE: usize = 14;

/// The counts a counter may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Possible {
    Counts(BTreeSet<i64>),
    TooManyIndeterminate(usize),
}

/// The counts the operations on one counter allow.
pub fn possible_counts(ops: &[&Op]) -> Possible {
    let mut written: Vec<&Op> = ops.iter().copied().filter(|op| op.outcome != Outcome::Refused).collect();
    written.sort_by(|a, b| (a.time_ms, a.token.as_bytes()).cmp(&(b.time_ms, b.token.as_bytes())));
    let unknown: Vec<usize> =
        (0..written.len()).filter(|&i| written[i].outcome == Outcome::Indeterminate).collect();
    if unknown.len() > MAX_INDETERMINATE {
        return Possible::TooManyIndeterminate(unknown.len());
    }
    let mut counts = BTreeSet::new();
    for mask in 0u32..(1 << unknown.len()) {
        let included = |i: usize| match unknown.iter().position(|&u| u == i) {
            Some(bit) => mask & (1 << bit) != 0,
            None => true,
        };
        let count = written.iter().enumerate().filter(|(i, _)| included(*i)).fold(0i64, |count, (_, op)| {
            match op.mutation {
                Mutation::Add(delta) => count.saturating_add(delta),
                Mutation::Clear => 0,
            }
        });
        counts.insert(count);
    }
    Possible::Counts(counts)
}

/// What a read of a counter says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The count is one the model allows.
    Ok,
    /// Less than every count the model allows: acknowledged work is missing.
    Lost,
    /// More than every count the model allows: something was counted twice (or counted
    /// although it was refused).
    Duplicated,
    /// Between the allowed counts but none of them.
    Wrong,
    /// Too many indeterminate operations to list the allowed counts.
    Unchecked,
}

pub fn judge(read: i64, possible: &Possible) -> Verdict {
    let Possible::Counts(counts) = possible else { return Verdict::Unchecked };
    match (counts.first(), counts.last()) {
        _ if counts.contains(&read) => Verdict::Ok,
        (Some(&low), _) if read < low => Verdict::Lost,
        (_, Some(&high)) if read > high => Verdict::Duplicated,
        _ => Verdict::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::super::history::Door;
    use super::*;

    fn op(mutation: Mutation, token: &str, time_ms: i64, outcome: Outcome) -> Op {
        Op {
            counter: 0,
            mutation,
            token: token.to_owned(),
            time_ms,
            door: Door::Http,
            outcome,
            attempts: 1,
            last_error: None,
        }
    }

    fn counts(ops: &[Op]) -> Possible {
        possible_counts(&ops.iter().collect::<Vec<_>>())
    }

    fn set(values: &[i64]) -> Possible {
        Possible::Counts(values.iter().copied().collect())
    }

    #[test]
    fn acknowledged_adds_make_one_count_and_refused_ones_none() {
        let ops = [
            op(Mutation::Add(3), "a", 1, Outcome::Acked),
            op(Mutation::Add(4), "b", 2, Outcome::Acked),
            op(Mutation::Add(100), "c", 3, Outcome::Refused),
        ];
        assert_eq!(counts(&ops), set(&[7]));
    }

    #[test]
    fn a_clear_removes_what_is_ordered_before_it_by_time_then_token() {
        let ops = [
            op(Mutation::Add(5), "z", 10, Outcome::Acked),
            op(Mutation::Clear, "m", 10, Outcome::Acked),
            // Same time as the clear, and its token sorts first: ordered before it.
            op(Mutation::Add(7), "a", 10, Outcome::Acked),
            op(Mutation::Add(2), "b", 11, Outcome::Acked),
            // Logged late but generated early: still before the clear.
            op(Mutation::Add(9), "y", 3, Outcome::Acked),
        ];
        assert_eq!(counts(&ops), set(&[7]));
    }

    #[test]
    fn indeterminate_operations_give_every_subset() {
        let ops = [
            op(Mutation::Add(1), "a", 1, Outcome::Acked),
            op(Mutation::Add(10), "b", 2, Outcome::Indeterminate),
            op(Mutation::Clear, "c", 3, Outcome::Indeterminate),
            op(Mutation::Add(100), "d", 4, Outcome::Acked),
        ];
        assert_eq!(counts(&ops), set(&[100, 101, 111]));
    }

    #[test]
    fn too_many_indeterminate_operations_are_not_guessed() {
        let ops: Vec<Op> = (0..=MAX_INDETERMINATE)
            .map(|i| op(Mutation::Add(1), &format!("t{i:03}"), 1, Outcome::Indeterminate))
            .collect();
        let possible = counts(&ops);
        assert_eq!(possible, Possible::TooManyIndeterminate(MAX_INDETERMINATE + 1));
        assert_eq!(judge(3, &possible), Verdict::Unchecked);
    }

    #[test]
    fn reads_outside_the_model_are_lost_duplicated_or_wrong() {
        let possible = set(&[5, 9]);
        assert_eq!(judge(5, &possible), Verdict::Ok);
        assert_eq!(judge(9, &possible), Verdict::Ok);
        assert_eq!(judge(4, &possible), Verdict::Lost);
        assert_eq!(judge(10, &possible), Verdict::Duplicated);
        assert_eq!(judge(7, &possible), Verdict::Wrong);
    }
}
