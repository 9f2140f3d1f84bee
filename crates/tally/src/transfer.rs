//! `tally export` and `tally import`: namespaces and counters as JSON lines, through a running
//! server's gRPC door. Going through the door rather than the files is what lets an export
//! run while the server serves, and an import fill any store: export from one server, import
//! into another, whatever stores they run on.
//!
//! The format, one JSON object per line ([`Line`]):
//! - first, `{"tally_export":1,"id":"…","exported_at":"…"}`: the format's version and a random
//!   id of this export;
//! - each namespace, `{"namespace":"NAME","config":{…}}`, its settings as the HTTP API writes
//!   them;
//! - each counter after its namespace, `{"namespace":"NAME","counter":"NAME","count":N}`.
//!
//! An import adds each counter's count with the token `import-<id>-<line number>`: run again
//! within the namespace's idempotency window (10 minutes by default), it applies each line
//! once however often it is run, so an interrupted import is resumed by running it again, or
//! by `--from-line` with the line it names.

use std::io::{BufRead, Write};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use tally_core::{CounterType, ErrorCode, NamespaceConfig, Timestamp};
use tally_proto::v1 as pb;
use tally_server::convert;
use tally_server::error::code_of_grpc;

use crate::client::Connection;

/// The version of the format this build writes and reads.
const FORMAT: u32 = 1;
/// Counters asked for per `ListCounters` page, and adds sent per `BatchAddCount`.
const PAGE: usize = 500;
/// How often an import retries a batch the server could not take (`UNAVAILABLE`, say).
const RETRIES: u32 = 6;
/// Progress goes to stderr every this many counters.
const PROGRESS_EVERY: u64 = 10_000;

/// One line of an export.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
enum Line {
    Header(Header),
    Counter(CounterLine),
    Namespace(NamespaceLine),
}

/// The first line.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Header {
    tally_export: u32,
    id: String,
    exported_at: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct NamespaceLine {
    namespace: String,
    config: NamespaceConfig,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct CounterLine {
    namespace: String,
    counter: String,
    count: i64,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Export only these namespaces (repeat the flag) [default: every namespace].
    #[arg(long = "namespace", value_name = "NAME")]
    namespaces: Vec<String>,
    /// Resume an export that stopped: start after this counter (`NAMESPACE:COUNTER`, as the
    /// stopped export printed), with no header, and append the output to the first part.
    #[arg(long, value_name = "NAMESPACE:COUNTER")]
    after: Option<String>,
    /// Write here instead of stdout (appended to with `--after`).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The export to read [default: stdin].
    file: Option<std::path::PathBuf>,
    /// Skip the lines before this one (1 is the header), to resume where an import stopped.
    #[arg(long, value_name = "LINE", default_value_t = 1)]
    from_line: u64,
    #[command(flatten)]
    conn: Connection,
}

/// Where an export resumes: inside `namespace`, after `counter`.
struct Resume {
    namespace: String,
    counter: String,
}

pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let resume = args
        .after
        .as_deref()
        .map(|after| {
            let (namespace, counter) = after
                .split_once(':')
                .with_context(|| format!("--after {after:?} is not NAMESPACE:COUNTER"))?;
            anyhow::Ok(Resume { namespace: namespace.to_owned(), counter: counter.to_owned() })
        })
        .transpose()?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(resume.is_some())
                .truncate(resume.is_none())
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut namespaces = args.conn.namespaces().await?;
    let mut listed = namespaces
        .list_namespaces(pb::ListNamespacesRequest {})
        .await
        .map_err(|e| args.conn.error(e))?
        .into_inner()
        .namespaces;
    if !args.namespaces.is_empty() {
        for wanted in &args.namespaces {
            anyhow::ensure!(listed.iter().any(|n| &n.name == wanted), "namespace {wanted:?} does not exist");
        }
        listed.retain(|n| args.namespaces.contains(&n.name));
    }
    if let Some(resume) = &resume {
        anyhow::ensure!(
            listed.iter().any(|n| n.name == resume.namespace),
            "--after names the namespace {:?}, which is not exported",
            resume.namespace
        );
        listed.retain(|n| n.name >= resume.namespace);
    } else {
        let id = format!("{:016x}", rand::random::<u64>());
        let exported_at = Timestamp::from_system_time(std::time::SystemTime::now()).to_string();
        write_line(&mut out, &Line::Header(Header { tally_export: FORMAT, id, exported_at }))?;
    }
    let mut counters = args.conn.counters().await?;
    let (mut exported, mut last) = (0u64, None::<String>);
    for n in &listed {
        let config = convert::config_from_proto(n.config.as_ref()).map_err(|e| {
            anyhow::anyhow!("namespace {:?} came with settings this build cannot read: {e}", n.name)
        })?;
        let resumed = resume.as_ref().filter(|r| r.namespace == n.name);
        if resumed.is_none() {
            write_line(
                &mut out,
                &Line::Namespace(NamespaceLine { namespace: n.name.clone(), config: config.clone() }),
            )?;
        }
        if config.counter_type == CounterType::BestEffort {
            eprintln!(
                "{}: best_effort, settings only (its counters are not durable and are not exported)",
                n.name
            );
            continue;
        }
        let mut page_token = resumed.map(|r| r.counter.clone()).unwrap_or_default();
        loop {
            let request = pb::ListCountersRequest {
                namespace: n.name.clone(),
                prefix: String::new(),
                page_size: PAGE as i32,
                page_token: std::mem::take(&mut page_token),
            };
            let page = match counters.list_counters(request).await {
                Ok(page) => page.into_inner(),
                Err(status) => {
                    out.flush()?;
                    let error = args.conn.error(status);
                    return Err(match &last {
                        Some(at) => error.context(format!(
                            "export stopped after {at}; resume with --after {at} (and the same --output, or >> the same file)"
                        )),
                        None => error,
                    });
                }
            };
            for c in page.counters {
                write_line(
                    &mut out,
                    &Line::Counter(CounterLine {
                        namespace: n.name.clone(),
                        counter: c.counter_name.clone(),
                        count: c.count,
                    }),
                )?;
                last = Some(format!("{}:{}", n.name, c.counter_name));
                exported += 1;
                if exported.is_multiple_of(PROGRESS_EVERY) {
                    eprintln!("exported {exported} counters (at {})", last.as_deref().unwrap_or_default());
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    out.flush()?;
    eprintln!("exported {} namespaces and {exported} counters", listed.len());
    Ok(())
}

fn write_line(out: &mut dyn Write, line: &Line) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n").context("cannot write the export")
}

/// What an import has done so far.
#[derive(Default)]
struct Imported {
    namespaces: u64,
    counters: u64,
    /// Of `counters`, those whose add an earlier run had applied already (same token).
    already: u64,
}

/// Adds read but not yet sent, with their line numbers.
struct Pending {
    lines: Vec<u64>,
    adds: Vec<pb::AddCountRequest>,
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let input: Box<dyn BufRead> = match &args.file {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
    };
    let mut lines = input.lines();
    let header = lines.next().context("the export is empty: its first line is the header")??;
    let id = match serde_json::from_str(&header) {
        Ok(Line::Header(Header { tally_export: FORMAT, id, .. })) => id,
        Ok(Line::Header(Header { tally_export, .. })) => {
            anyhow::bail!("line 1: format {tally_export}; this tally reads format {FORMAT}")
        }
        _ => anyhow::bail!("line 1 is not the header of a tally export: {header:?}"),
    };
    let mut namespaces = args.conn.namespaces().await?;
    let mut counters = args.conn.counters().await?;
    let mut pending = Pending { lines: Vec::new(), adds: Vec::new() };
    let mut done = Imported::default();
    for (at, text) in (2u64..).zip(lines) {
        let text = text.with_context(|| format!("cannot read line {at}"))?;
        if at < args.from_line || text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text)
            .with_context(|| format!("line {at} is neither a namespace nor a counter: {text:?}"))?;
        match line {
            Line::Header(_) => anyhow::bail!("line {at}: a second header"),
            Line::Namespace(NamespaceLine { namespace, config }) => {
                send(&args.conn, &mut counters, &mut pending, &mut done).await?;
                create_namespace(&args.conn, &mut namespaces, &namespace, &config)
                    .await
                    .with_context(|| format!("line {at}: fix it and resume with --from-line {at}"))?;
                done.namespaces += 1;
            }
            Line::Counter(CounterLine { namespace, counter, count }) => {
                if count == 0 {
                    continue;
                }
                pending.lines.push(at);
                pending.adds.push(pb::AddCountRequest {
                    namespace,
                    counter_name: counter,
                    delta: count,
                    idempotency_token: Some(pb::IdempotencyToken {
                        token: format!("import-{id}-{at}"),
                        generation_time: None,
                    }),
                });
                if pending.adds.len() == PAGE {
                    send(&args.conn, &mut counters, &mut pending, &mut done).await?;
                }
            }
        }
    }
    send(&args.conn, &mut counters, &mut pending, &mut done).await?;
    eprintln!(
        "imported {} namespaces and {} counters ({} of them applied already by an earlier run)",
        done.namespaces, done.counters, done.already
    );
    Ok(())
}

/// Creates the namespace; one that exists with the same settings (an import run again) is
/// taken as it is, one with other settings is refused.
async fn create_namespace(
    conn: &Connection,
    client: &mut pb::namespace_service_client::NamespaceServiceClient<crate::client::Authed>,
    name: &str,
    config: &NamespaceConfig,
) -> anyhow::Result<()> {
    let request =
        pb::CreateNamespaceRequest { name: name.to_owned(), config: Some(convert::config_to_proto(config)) };
    let status = match client.create_namespace(request).await {
        Ok(_) => return Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => status,
        Err(status) => return Err(conn.error(status)),
    };
    let existing = client
        .get_namespace(pb::GetNamespaceRequest { name: name.to_owned() })
        .await
        .map_err(|e| conn.error(e))?
        .into_inner();
    let existing =
        convert::config_from_proto(existing.config.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        &existing == config,
        "{}: namespace {name:?} exists with other settings ({}); delete it or import into another server",
        status.message(),
        serde_json::to_string(&existing)?
    );
    Ok(())
}

/// Sends the pending adds as one `BatchAddCount`, retrying what the server could not take yet
/// (with the same tokens, so a retry never applies an add twice).
async fn send(
    conn: &Connection,
    client: &mut pb::counter_service_client::CounterServiceClient<crate::client::Authed>,
    pending: &mut Pending,
    done: &mut Imported,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    while !pending.adds.is_empty() {
        let request = pb::BatchAddCountRequest { adds: pending.adds.clone() };
        let first = pending.lines[0];
        let results = match client.batch_add_count(request).await {
            Ok(response) => response.into_inner().results,
            Err(status) if code_of_grpc(status.code()).is_some_and(retriable) && attempt < RETRIES => {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
                continue;
            }
            Err(status) => {
                return Err(conn
                    .error(status)
                    .context(format!("import stopped; resume with --from-line {first}")));
            }
        };
        let mut again = Pending { lines: Vec::new(), adds: Vec::new() };
        for ((line, add), result) in pending.lines.drain(..).zip(pending.adds.drain(..)).zip(results) {
            match result.result {
                Some(pb::batch_add_count_result::Result::Added(added)) => {
                    done.counters += 1;
                    done.already += u64::from(!added.applied);
                    if done.counters.is_multiple_of(PROGRESS_EVERY) {
                        eprintln!("imported {} counters (line {line})", done.counters);
                    }
                }
                Some(pb::batch_add_count_result::Result::Error(e))
                    if e.code.parse().is_ok_and(retriable) && attempt < RETRIES =>
                {
                    again.lines.push(line);
                    again.adds.push(add);
                }
                Some(pb::batch_add_count_result::Result::Error(e)) => anyhow::bail!(
                    "line {line} ({}:{}): {}: {}; fix it and resume with --from-line {line}",
                    add.namespace,
                    add.counter_name,
                    e.code,
                    e.message
                ),
                None => anyhow::bail!(
                    "line {line}: the server answered no result; resume with --from-line {line}"
                ),
            }
        }
        if !again.adds.is_empty() {
            attempt += 1;
            tokio::time::sleep(backoff(attempt)).await;
        }
        *pending = again;
    }
    Ok(())
}

/// Whether a refused add is sent again: the server was short of time or capacity. The same
/// token makes that safe after `UNAVAILABLE`, which may have written it. `INTERNAL` stops the
/// import instead: it is a bug to look at, not a state to wait out.
fn retriable(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Unavailable | ErrorCode::ResourceExhausted | ErrorCode::DeadlineExceeded)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 << attempt.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_line_reads_back_as_written() {
        let lines = [
            Line::Header(Header {
                tally_export: 1,
                id: "00ff".into(),
                exported_at: "2026-11-30T00:00:00Z".into(),
            }),
            Line::Namespace(NamespaceLine { namespace: "views".into(), config: NamespaceConfig::default() }),
            Line::Counter(CounterLine { namespace: "views".into(), counter: "home".into(), count: -3 }),
        ];
        for line in lines {
            let text = serde_json::to_string(&line).expect("serialises");
            assert_eq!(serde_json::from_str::<Line>(&text).expect("parses"), line, "{text}");
        }
    }

    #[test]
    fn a_counter_line_with_a_misspelt_field_is_refused() {
        let text = r#"{"namespace":"views","counter":"home","cuont":3}"#;
        assert!(serde_json::from_str::<Line>(text).is_err());
    }
}
