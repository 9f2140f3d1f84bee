//! `COMMAND` and `INFO`: what clients and exporters ask a server about itself, answered from
//! the command table and the door's and engine's figures.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tally_engine::Engine;

use super::command::Command;
use super::commands::{Session, upper};
use super::reply::Reply;
use super::table::{COMMANDS, Spec};

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND DOCS [name...]`.
pub fn command(args: &[Bytes]) -> Reply {
    let Some((sub, names)) = args.split_first() else {
        return Reply::Array(COMMANDS.iter().map(info_entry).collect());
    };
    let named = || names.iter().map(|n| Command::parse(n).map(Command::spec));
    match upper(sub).as_str() {
        "COUNT" if names.is_empty() => Reply::Integer(COMMANDS.len() as i64),
        "INFO" if names.is_empty() => Reply::Array(COMMANDS.iter().map(info_entry).collect()),
        "INFO" => Reply::Array(named().map(|s| s.map_or(Reply::Null, info_entry)).collect()),
        "DOCS" if names.is_empty() => Reply::Map(COMMANDS.iter().map(docs_entry).collect()),
        "DOCS" => Reply::Map(named().flatten().map(docs_entry).collect()),
        other => Reply::Error(format!(
            "ERR unknown subcommand '{}'; COMMAND takes COUNT, INFO and DOCS",
            other.to_lowercase()
        )),
    }
}

/// A `COMMAND INFO` entry in the Redis 7 shape: name, arity, flags, first key, last key,
/// step, ACL categories, tips, key specs, subcommands.
fn info_entry(spec: &Spec) -> Reply {
    let (first, last, step) = spec.key_positions();
    Reply::Array(vec![
        Reply::text(spec.command.name().to_lowercase()),
        Reply::Integer(spec.arity),
        Reply::Array(spec.flags.iter().map(|f| Reply::Simple(f)).collect()),
        Reply::Integer(first),
        Reply::Integer(last),
        Reply::Integer(step),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// A `COMMAND DOCS` entry: what `redis-cli` shows as hints.
fn docs_entry(spec: &Spec) -> (Reply, Reply) {
    let arguments = spec
        .args
        .iter()
        .map(|(name, kind)| {
            Reply::Map(vec![
                (Reply::text("name"), Reply::text(*name)),
                (Reply::text("type"), Reply::text(*kind)),
                (Reply::text("display_text"), Reply::text(*name)),
            ])
        })
        .collect();
    let doc = Reply::Map(vec![
        (Reply::text("summary"), Reply::text(spec.summary)),
        (Reply::text("since"), Reply::text("1.0.0")),
        (Reply::text("group"), Reply::text(spec.group)),
        (Reply::text("complexity"), Reply::text("O(1) per key")),
        (Reply::text("arguments"), Reply::Array(arguments)),
    ]);
    (Reply::text(spec.command.name().to_lowercase()), doc)
}

/// `INFO [section...]`: `server`, `clients`, `stats`, `persistence`, `keyspace` and `tally`
/// (all of them without a section, or with `all`/`everything`/`default`).
pub fn info(engine: &Engine, session: &Session, sections: &[Bytes]) -> String {
    let wanted: Vec<String> = sections.iter().map(|s| upper(s).to_lowercase()).collect();
    let all =
        wanted.is_empty() || wanted.iter().any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let door = &session.door;
    let uptime = door.started.elapsed().as_secs();
    let mut out = String::new();
    let mut section = |name: &str, lines: Vec<(String, String)>| {
        if all || wanted.iter().any(|w| w == name) {
            let mut title = name.to_owned();
            title[..1].make_ascii_uppercase();
            out.push_str(&format!("# {title}\r\n"));
            for (k, v) in lines {
                out.push_str(&format!("{k}:{v}\r\n"));
            }
            out.push_str("\r\n");
        }
    };
    let kv = |k: &str, v: String| (k.to_owned(), v);
    section(
        "server",
        vec![
            kv("redis_version", "7.0.0".into()),
            kv("tally_version", env!("CARGO_PKG_VERSION").into()),
            kv("redis_mode", "standalone".into()),
            kv("os", std::env::consts::OS.into()),
            kv("arch_bits", (usize::BITS).to_string()),
            kv("process_id", std::process::id().to_string()),
            kv("tcp_port", door.port.to_string()),
            kv("uptime_in_seconds", uptime.to_string()),
            kv("uptime_in_days", (uptime / 86_400).to_string()),
        ],
    );
    section(
        "clients",
        vec![
            kv("connected_clients", door.connections.open.load(Ordering::Relaxed).to_string()),
            kv("maxclients", door.max_connections.to_string()),
            kv("blocked_clients", "0".into()),
        ],
    );
    section(
        "stats",
        vec![
            kv("total_connections_received", door.connections.total.load(Ordering::Relaxed).to_string()),
            kv("total_commands_processed", door.commands_total.load(Ordering::Relaxed).to_string()),
            kv("rejected_connections", "0".into()),
            kv("expired_keys", "0".into()),
            kv("evicted_keys", "0".into()),
        ],
    );
    section(
        "persistence",
        vec![kv("loading", "0".into()), kv("aof_enabled", "1".into()), kv("aof_fsync", "always".into())],
    );
    // The count is the store's estimate where it has one; no line where it has none.
    let keyspace = engine.approximate_counters().map(|n| kv("db0", format!("keys={n},expires=0,avg_ttl=0")));
    section("keyspace", keyspace.into_iter().collect());
    section("tally", vec![kv("rollup_queue_depth", engine.rollups().depth().to_string())]);
    out
}
