//! The model: which counts a counter may show, given the operations the clients logged.
//!
//! The server orders a counter's events by `(generation_time, token)`, and a clear removes
//! everything ordered before it. The checker chose both, so the count the acknowledged
//! operations make is known exactly. An indeterminate operation may or may not have been
//! written, so every subset of them is a possible history. Walking the operations in order
//! and keeping the set of counts reachable so far lists all of them without enumerating
//! subsets: an indeterminate add maps the set `S` to `S ∪ (S + delta)`, an indeterminate
//! clear to `S ∪ {0}`. The set never outgrows the range the indeterminate deltas span.

use std::collections::BTreeSet;

use serde::Serialize;

use super::history::{Mutation, Op, Outcome};

/// The counts a counter may show.
pub type Possible = BTreeSet<i64>;

/// The counts the operations on one counter allow.
pub fn possible_counts(ops: &[&Op]) -> Possible {
    let mut written: Vec<&Op> = ops.iter().copied().filter(|op| op.outcome != Outcome::Refused).collect();
    written.sort_by(|a, b| (a.time_ms, a.token.as_bytes()).cmp(&(b.time_ms, b.token.as_bytes())));
    let mut counts = BTreeSet::from([0i64]);
    for op in written {
        let applied: BTreeSet<i64> = match op.mutation {
            Mutation::Add(delta) => counts.iter().map(|c| c.saturating_add(delta)).collect(),
            Mutation::Clear => BTreeSet::from([0]),
        };
        if op.outcome == Outcome::Acked {
            counts = applied;
        } else {
            counts.extend(applied);
        }
    }
    counts
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
}

pub fn judge(read: i64, counts: &Possible) -> Verdict {
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
            completed_ms: time_ms + 1,
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
        values.iter().copied().collect()
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
    fn many_indeterminate_operations_are_listed_without_enumerating_subsets() {
        // 2^200 subsets, but only the counts 0..=200 are reachable.
        let mut ops: Vec<Op> =
            (0..200).map(|i| op(Mutation::Add(1), &format!("t{i:04}"), 1, Outcome::Indeterminate)).collect();
        ops.push(op(Mutation::Add(1000), "u", 2, Outcome::Acked));
        assert_eq!(counts(&ops), (1000..=1200).collect::<Possible>());
        assert_eq!(judge(999, &counts(&ops)), Verdict::Lost);
        assert_eq!(judge(1201, &counts(&ops)), Verdict::Duplicated);
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
