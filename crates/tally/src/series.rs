//! `tally series`: a counter's adds per time bucket (`GetCountSeries`), drawn as a sparkline.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tally_proto::v1 as pb;
use tally_server::convert;

use crate::client::{Connection, time_flag, time_text};

#[derive(Args)]
pub struct SeriesArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    /// How far back from --to (or from now), e.g. 1h, 1day [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "from")]
    last: Option<Duration>,
    /// Start of the range, RFC 3339.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// End of the range, RFC 3339 [default: the server's clock now].
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Bucket length, e.g. 1m, 10s [default: 1m].
    #[arg(long, value_parser = humantime::parse_duration)]
    step: Option<Duration>,
    #[command(flatten)]
    conn: Connection,
}

/// The eight heights of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per value, scaled from the lowest (or 0) to the highest (or 0): an empty
/// bucket is the lowest bar unless some bucket went below zero.
pub fn sparkline(values: &[i64]) -> String {
    let low = values.iter().copied().min().unwrap_or(0).min(0);
    let high = values.iter().copied().max().unwrap_or(0).max(0);
    let span = (i128::from(high) - i128::from(low)).max(1);
    values
        .iter()
        .map(|&v| {
            let level = (i128::from(v) - i128::from(low)) * (BARS.len() as i128 - 1) / span;
            BARS[level as usize]
        })
        .collect()
}

pub async fn run(args: SeriesArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let request = pb::GetCountSeriesRequest {
        namespace: args.namespace.clone(),
        counter_name: args.counter.clone(),
        from: time_flag("from", args.from.as_deref())?,
        to: time_flag("to", args.to.as_deref())?,
        step: args.step.map(convert::duration_to_proto),
        last: args.last.map(convert::duration_to_proto),
    };
    let r = client.get_count_series(request).await.map_err(|e| args.conn.error(e))?.into_inner();
    let start = |b: &pb::SeriesBucket| time_text(b.start.as_ref());
    let step =
        r.step.map(|d| Duration::new(d.seconds as u64, d.nanos as u32)).context("the answer has no step")?;
    let step_text = humantime::format_duration(step).to_string();
    if args.conn.json {
        let buckets: Vec<_> = r
            .buckets
            .iter()
            .map(|b| {
                json!({"start": start(b), "added": b.added, "adds": b.adds, "clears": b.clears,
                            "folded": b.folded, "retained": b.retained})
            })
            .collect();
        println!("{}", json!({"buckets": buckets, "total": r.total, "step": step_text}));
        return Ok(());
    }
    let values: Vec<i64> = r.buckets.iter().map(|b| b.added).collect();
    let (first, last) = (r.buckets.first().and_then(start), r.buckets.last().and_then(start));
    let peak = values.iter().copied().max().unwrap_or(0);
    println!(
        "{}:{}  {} buckets of {step_text}, total added {}",
        args.namespace,
        args.counter,
        values.len(),
        r.total
    );
    println!("{}", sparkline(&values));
    println!(
        "from {} (first bucket) to {} (last), peak {peak} per {step_text}",
        first.unwrap_or_default(),
        last.unwrap_or_default()
    );
    let clears: u64 = r.buckets.iter().map(|b| b.clears).sum();
    if clears > 0 {
        println!("{clears} clear(s) in the range, counted in their buckets and not subtracted");
    }
    if r.buckets.iter().any(|b| !b.retained) {
        println!(
            "the oldest buckets are past the namespace's retention: some of their events may have been deleted"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_from_zero_or_the_lowest_to_the_highest() {
        assert_eq!(sparkline(&[0, 1, 2, 3, 4, 5, 6, 7]), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[0, 0, 0]), "▁▁▁", "nothing happened");
        assert_eq!(sparkline(&[5, 5]), "██", "scaled from zero, not from the lowest");
        assert_eq!(sparkline(&[-7, 0, 7]), "▁▄█");
        assert_eq!(sparkline(&[i64::MIN, i64::MAX]), "▁█", "no overflow at the extremes");
        assert_eq!(sparkline(&[]), "");
    }
}
