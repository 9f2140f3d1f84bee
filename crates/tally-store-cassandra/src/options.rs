//! How to reach the cluster and how to lay data out in it.

use std::time::Duration;

use scylla::frame::types::Consistency;

use crate::layout::Layout;

/// Connection and layout settings of a [`CassandraStore`](crate::CassandraStore).
#[derive(Debug, Clone)]
pub struct CassandraOptions {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// The keyspace Tally owns; created if missing.
    pub keyspace: String,
    /// Replication factor used when the keyspace is created (`SimpleStrategy`). An existing
    /// keyspace keeps its own replication.
    pub replication_factor: u32,
    /// Consistency of every read and write; `LOCAL_QUORUM` by default, so that a read sees
    /// every acknowledged write when replication is 3 and one replica is down.
    pub consistency: Consistency,
    /// The longest a write may take to land. An event is sent only if `now + write_timeout` is
    /// before its commit deadline, and the driver gives up after it. Must be at least the
    /// cluster's `write_request_timeout` and `cas_contention_timeout`, after which a node
    /// drops a write instead of applying it late.
    pub write_timeout: Duration,
    /// Timeout of reads and schema changes.
    pub read_timeout: Duration,
    /// Partitioning used when the keyspace is created; an existing keyspace keeps its own.
    pub layout: Layout,
}

impl Default for CassandraOptions {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "tally".to_owned(),
            replication_factor: 1,
            consistency: Consistency::LocalQuorum,
            write_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(10),
            layout: Layout::default(),
        }
    }
}

impl CassandraOptions {
    /// Parses `cassandra://host[:port][,host[:port]…]/keyspace[?replication_factor=N]`.
    /// `scylla://` is accepted as a synonym. The port defaults to 9042.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("cassandra://")
            .or_else(|| url.strip_prefix("scylla://"))
            .ok_or_else(|| format!("store URL {url:?} must start with cassandra:// or scylla://"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, keyspace) = rest.split_once('/').unwrap_or((rest, "tally"));
        let keyspace = if keyspace.is_empty() { "tally" } else { keyspace };
        if !keyspace.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || keyspace.len() > 48
            || !keyspace.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(format!(
                "keyspace {keyspace:?} in {url:?} must be 1-48 letters, digits or '_', starting with a letter"
            ));
        }
        let nodes: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| if h.contains(':') { h.to_owned() } else { format!("{h}:9042") })
            .collect();
        if nodes.is_empty() {
            return Err(format!("store URL {url:?} names no host"));
        }
        let mut options = Self { nodes, keyspace: keyspace.to_owned(), ..Self::default() };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replication_factor", n)) => {
                    options.replication_factor = n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("replication_factor {n:?} in {url:?} is not a positive number")
                    })?;
                }
                _ => return Err(format!("unknown store URL parameter {pair:?} in {url:?}")),
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let o = CassandraOptions::from_url("cassandra://10.0.0.1,10.0.0.2:9043/counters").expect("valid");
        assert_eq!(o.nodes, vec!["10.0.0.1:9042", "10.0.0.2:9043"]);
        assert_eq!(o.keyspace, "counters");
        let o = CassandraOptions::from_url("scylla://db?replication_factor=3").expect("valid");
        assert_eq!((o.keyspace.as_str(), o.replication_factor), ("tally", 3));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, needle) in [
            ("postgres://x/y", "must start with"),
            ("cassandra:///tally", "names no host"),
            ("cassandra://h/bad-name", "keyspace"),
            ("cassandra://h/t?replication_factor=0", "replication_factor"),
            ("cassandra://h/t?color=red", "unknown store URL parameter"),
        ] {
            let err = CassandraOptions::from_url(url).expect_err(url);
            assert!(err.contains(needle), "{url}: {err}");
        }
    }
}
