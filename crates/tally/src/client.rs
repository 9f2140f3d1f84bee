//! The client commands: `tally add|get|clear|ns`, over gRPC.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;
use tally_client::{Client, ClientError, ConnectOptions, Door, ErrorCode};
use tally_core::{CounterType, Timestamp};
use tally_proto::v1 as pb;
use tally_proto::v1::counter_service_client::CounterServiceClient;
use tally_proto::v1::namespace_service_client::NamespaceServiceClient;
use tally_server::convert;

/// The gRPC address `tally serve` listens on by default.
const DEFAULT_ADDR: &str = "http://127.0.0.1:7090";

/// Where the server is, and how to print.
#[derive(Args)]
pub struct Connection {
    /// gRPC address of the server: `host:port` or a URL.
    #[arg(long, global = true, default_value = DEFAULT_ADDR, env = "TALLY_ADDR")]
    addr: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Bearer token, for a server with authentication on.
    #[arg(long = "auth-token", global = true, env = "TALLY_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// PEM CA certificate to trust, for a server with TLS on (`--addr https://…`; builds made
    /// with `--no-default-features` have no TLS).
    #[arg(long = "tls-ca", global = true, env = "TALLY_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
}

pub use tally_client::Authed;

impl Connection {
    /// The gRPC door through `tally-client`, which connects (with the bearer token and TLS)
    /// and reads refusals back.
    async fn door(&self) -> anyhow::Result<tally_client::GrpcDoor> {
        let tls_ca_pem = match &self.tls_ca {
            Some(ca) if cfg!(not(feature = "tls")) => anyhow::bail!(
                "--tls-ca {}: this tally was built without TLS; build it with the default features",
                ca.display()
            ),
            Some(ca) => {
                Some(std::fs::read(ca).with_context(|| format!("cannot read --tls-ca {}", ca.display()))?)
            }
            None => None,
        };
        let options =
            ConnectOptions { auth_token: self.auth_token.clone(), tls_ca_pem, ..ConnectOptions::default() };
        let client = Client::connect(Door::Grpc, &self.addr, &options).await.map_err(|e| match e {
            ClientError::Config(message) => anyhow::anyhow!("bad --addr or --auth-token: {message}"),
            other => anyhow::Error::new(other),
        })?;
        Ok(client.grpc().expect("a gRPC client").clone())
    }

    pub async fn counters(&self) -> anyhow::Result<CounterServiceClient<Authed>> {
        Ok(self.door().await?.counters())
    }

    pub async fn namespaces(&self) -> anyhow::Result<NamespaceServiceClient<Authed>> {
        Ok(self.door().await?.namespaces_service())
    }

    /// `--addr` as a URL: `host:port` alone means `http://host:port`.
    fn url(&self) -> String {
        if self.addr.contains("://") { self.addr.clone() } else { format!("http://{}", self.addr) }
    }

    /// A refusal or failure of a call, named by its code; a failure that looks like another
    /// protocol answering says which port to use.
    pub fn error(&self, status: tonic::Status) -> anyhow::Error {
        let error = ClientError::from_grpc(&status);
        let foreign = [
            "protocol error",
            "invalid compression flag",
            "operation was canceled",
            "http2 error",
            "frame with invalid size",
            "invalid HTTP",
            "transport error",
        ];
        // A Redis port closes the connection on the HTTP/2 preface: the call is cancelled.
        let transport_like = matches!(
            error,
            ClientError::NoAnswer { .. }
                | ClientError::Refused { code: ErrorCode::Internal | ErrorCode::Unavailable, .. }
        );
        let looks_foreign = transport_like && foreign.iter().any(|f| status.message().contains(f));
        let error = anyhow::Error::new(error);
        if looks_foreign {
            return error.context(format!(
                "{} does not answer gRPC: is it tally's HTTP port (7080 by default) or Redis port (7379)? \
                 The gRPC port is 7090 by default (--addr host:port)",
                self.url()
            ));
        }
        error
    }
}

/// An idempotency token from the command line.
#[derive(Args)]
pub struct TokenArgs {
    /// Idempotency token; a retry with the same token within the namespace's
    /// idempotency_window applies once.
    #[arg(long)]
    token: Option<String>,
    /// The token's generation time, RFC 3339 [default: the server's clock when it arrives].
    #[arg(long, requires = "token", value_name = "TIME")]
    generation_time: Option<String>,
}

impl TokenArgs {
    /// The token of an add: the one given, else a new random one, so that the add can be
    /// retried safely (its generation time is then fixed by the server).
    fn for_add(&self) -> anyhow::Result<pb::IdempotencyToken> {
        match self.to_proto()? {
            Some(token) => Ok(token),
            None => Ok(pb::IdempotencyToken {
                token: format!("cli-{:032x}", rand::random::<u128>()),
                generation_time: None,
            }),
        }
    }

    fn to_proto(&self) -> anyhow::Result<Option<pb::IdempotencyToken>> {
        let Some(token) = &self.token else { return Ok(None) };
        let generation_time = time_flag("generation-time", self.generation_time.as_deref())?;
        Ok(Some(pb::IdempotencyToken { token: token.clone(), generation_time }))
    }
}

#[derive(Args)]
pub struct AddArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    /// Signed delta.
    #[arg(default_value_t = 1, allow_negative_numbers = true)]
    delta: i64,
    #[command(flatten)]
    token: TokenArgs,
    /// Also print the count after the add (AddAndGetCount).
    #[arg(long)]
    get: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct GetArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct LsArgs {
    /// Namespace.
    namespace: String,
    /// Only counters whose names start with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Most counters to print; every page is fetched until then [default: all].
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    /// Events generated at or after this time, RFC 3339 [default: the oldest kept].
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Events generated before this time, RFC 3339 [default: every one].
    #[arg(long, value_name = "TIME")]
    to: Option<String>,
    /// Most events to print; every page is fetched until then [default: all].
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct RecountArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Args)]
pub struct ClearArgs {
    /// Namespace.
    namespace: String,
    /// Counter name.
    counter: String,
    #[command(flatten)]
    token: TokenArgs,
    #[command(flatten)]
    conn: Connection,
}

/// Namespace settings; unset ones take defaults on create and keep their values on update.
#[derive(Args)]
pub struct ConfigArgs {
    /// best_effort, eventual or accurate (create only).
    #[arg(long = "type", value_name = "TYPE")]
    counter_type: Option<String>,
    /// How old a mutation's generation_time may be, e.g. 5s.
    #[arg(long, value_parser = humantime::parse_duration)]
    accept_limit: Option<Duration>,
    /// How far ahead it may be, e.g. 1s.
    #[arg(long, value_parser = humantime::parse_duration)]
    clock_skew: Option<Duration>,
    /// How long rollup triggers coalesce, e.g. 1s.
    #[arg(long, value_parser = humantime::parse_duration)]
    coalesce: Option<Duration>,
    /// How long events are kept, e.g. 7days.
    #[arg(long, value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// How long a cached checkpoint is trusted, e.g. 60s.
    #[arg(long, value_parser = humantime::parse_duration)]
    cache_ttl: Option<Duration>,
    /// best_effort counters: time to live after the last write.
    #[arg(long, value_parser = humantime::parse_duration)]
    best_effort_ttl: Option<Duration>,
    /// How long a client's token stays taken after its first arrival, e.g. 10m.
    #[arg(long, value_parser = humantime::parse_duration)]
    idempotency_window: Option<Duration>,
}

impl ConfigArgs {
    fn to_proto(&self) -> anyhow::Result<pb::NamespaceConfig> {
        let counter_type = match &self.counter_type {
            None => pb::CounterType::Unspecified,
            Some(text) => convert::counter_type_to_proto(text.parse::<CounterType>()?),
        };
        let d = |d: Option<Duration>| {
            d.map(|d| prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
        };
        Ok(pb::NamespaceConfig {
            counter_type: counter_type as i32,
            accept_limit: d(self.accept_limit),
            clock_skew: d(self.clock_skew),
            coalesce: d(self.coalesce),
            retention: d(self.retention),
            cache_ttl: d(self.cache_ttl),
            best_effort_ttl: d(self.best_effort_ttl),
            idempotency_window: d(self.idempotency_window),
        })
    }
}

#[derive(Subcommand)]
pub enum NsCommand {
    /// CreateNamespace.
    Create {
        /// Namespace name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// ListNamespaces.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// GetNamespace.
    Show {
        /// Namespace name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// UpdateNamespace.
    Update {
        /// Namespace name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// DeleteNamespace, with every counter in it.
    Delete {
        /// Namespace name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// A time from an answer, RFC 3339; `None` when unset or out of range.
pub(crate) fn time_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.and_then(|t| convert::timestamp_from_proto(t).ok()).map(|t| t.to_string())
}

/// A time given as `--flag`, RFC 3339, as protobuf; refused naming the flag.
pub(crate) fn time_flag(flag: &str, text: Option<&str>) -> anyhow::Result<Option<prost_types::Timestamp>> {
    text.map(|t| {
        Timestamp::parse_rfc3339(t)
            .map(convert::timestamp_to_proto)
            .map_err(|e| anyhow::anyhow!("--{flag} {t:?}: {e}"))
    })
    .transpose()
}

fn type_text(value: i32) -> &'static str {
    convert::counter_type_from_proto(value).ok().flatten().map_or("unspecified", CounterType::as_str)
}

fn token_json(t: Option<&pb::IdempotencyToken>) -> serde_json::Value {
    t.map_or(
        serde_json::Value::Null,
        |t| json!({"token": t.token, "generation_time": time_text(t.generation_time.as_ref())}),
    )
}

fn print(json_out: bool, value: serde_json::Value, text: String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

pub async fn add(args: AddArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let sent = args.token.for_add()?;
    let retry = retry_command(&args, &sent.token);
    let token = Some(sent);
    let key = format!("{}:{}", args.namespace, args.counter);
    if args.get {
        let request = pb::AddAndGetCountRequest {
            namespace: args.namespace,
            counter_name: args.counter,
            delta: args.delta,
            idempotency_token: token,
        };
        let r = client.add_and_get_count(request).await.map_err(|e| args.conn.error(e))?.into_inner();
        let value = json!({"count": r.count, "counter_type": type_text(r.counter_type), "applied": r.applied,
            "as_of": time_text(r.as_of.as_ref()), "idempotency_token": token_json(r.idempotency_token.as_ref())});
        let verb = if r.applied { "added" } else { "already applied:" };
        let text = format!(
            "{verb} {} to {key}; count {} ({})\nretry safely with: {retry}",
            args.delta,
            r.count,
            type_text(r.counter_type)
        );
        print(args.conn.json, value, text);
    } else {
        let request = pb::AddCountRequest {
            namespace: args.namespace,
            counter_name: args.counter,
            delta: args.delta,
            idempotency_token: token,
        };
        let r = client.add_count(request).await.map_err(|e| args.conn.error(e))?.into_inner();
        let t = r.idempotency_token.as_ref();
        let value = json!({"applied": r.applied, "idempotency_token": token_json(t)});
        let verb = if r.applied { "added" } else { "already applied:" };
        let stamp = t.map_or(String::new(), |t| {
            format!(
                " (token {} generated {})",
                t.token,
                time_text(t.generation_time.as_ref()).unwrap_or_default()
            )
        });
        print(
            args.conn.json,
            value,
            format!("{verb} {} to {key}{stamp}\nretry safely with: {retry}", args.delta),
        );
    }
    Ok(())
}

pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let key = format!("{}:{}", args.namespace, args.counter);
    let request = pb::GetCountRequest { namespace: args.namespace, counter_name: args.counter, window: None };
    let r = client.get_count(request).await.map_err(|e| args.conn.error(e))?.into_inner();
    let as_of = time_text(r.as_of.as_ref());
    let value = json!({"count": r.count, "counter_type": type_text(r.counter_type), "as_of": as_of});
    let freshness = as_of.map_or("not rolled up yet".to_owned(), |t| format!("exact as of {t}"));
    print(args.conn.json, value, format!("{key} = {} ({}, {freshness})", r.count, type_text(r.counter_type)));
    Ok(())
}

/// The command that repeats an add with its token: within the namespace's idempotency window
/// it changes nothing if the add was applied, and applies it if it was not.
fn retry_command(args: &AddArgs, token: &str) -> String {
    let mut words = vec!["tally".to_owned(), "add".to_owned(), args.namespace.clone(), args.counter.clone()];
    words.push(args.delta.to_string());
    words.extend(["--token".to_owned(), token.to_owned()]);
    if args.get {
        words.push("--get".to_owned());
    }
    if args.conn.addr != DEFAULT_ADDR {
        words.extend(["--addr".to_owned(), args.conn.addr.clone()]);
    }
    words.iter().map(|w| shell_word(w)).collect::<Vec<_>>().join(" ")
}

/// `word`, quoted for a POSIX shell when it needs to be.
fn shell_word(word: &str) -> String {
    let plain =
        !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/=@,+".contains(c));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', "'\\''")) }
}

/// `tally ls`: one line per counter (`name count`), fetched a page at a time.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let (mut page_token, mut printed) = (String::new(), 0usize);
    let limit = args.limit.unwrap_or(usize::MAX);
    while printed < limit {
        let request = pb::ListCountersRequest {
            namespace: args.namespace.clone(),
            prefix: args.prefix.clone(),
            page_size: i32::try_from((limit - printed).min(1000)).unwrap_or(1000),
            page_token: std::mem::take(&mut page_token),
        };
        let r = client.list_counters(request).await.map_err(|e| args.conn.error(e))?.into_inner();
        for c in r.counters.iter().take(limit - printed) {
            let value = json!({"counter_name": c.counter_name, "count": c.count, "counter_type": type_text(c.counter_type)});
            print(args.conn.json, value, format!("{} {}", c.counter_name, c.count));
            printed += 1;
        }
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    Ok(())
}

pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let (from, to) = (time_flag("from", args.from.as_deref())?, time_flag("to", args.to.as_deref())?);
    let mut client = args.conn.counters().await?;
    let (mut page_token, mut printed) = (String::new(), 0usize);
    let limit = args.limit.unwrap_or(usize::MAX);
    while printed < limit {
        let request = pb::ListEventsRequest {
            namespace: args.namespace.clone(),
            counter_name: args.counter.clone(),
            from,
            to,
            page_size: i32::try_from((limit - printed).min(1000)).unwrap_or(1000),
            page_token: std::mem::take(&mut page_token),
        };
        let r = client.list_events(request).await.map_err(|e| args.conn.error(e))?.into_inner();
        for e in r.events.iter().take(limit - printed) {
            let time = time_text(e.generation_time.as_ref()).unwrap_or_default();
            let (kind, what) = match pb::MutationKind::try_from(e.kind) {
                Ok(pb::MutationKind::Clear) => ("clear", "clear".to_owned()),
                _ => ("add", format!("add {}", e.delta)),
            };
            let folded = if e.folded { "folded" } else { "not folded yet" };
            let value = json!({"generation_time": time, "token": e.token, "kind": kind,
                "delta": e.delta, "folded": e.folded});
            print(args.conn.json, value, format!("{time} {} {what} ({folded})", e.token));
            printed += 1;
        }
        if r.next_page_token.is_empty() {
            break;
        }
        page_token = r.next_page_token;
    }
    Ok(())
}

/// Prints the checkpoint against the kept events; exits 1 when they differ.
pub async fn recount(args: RecountArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let key = format!("{}:{}", args.namespace, args.counter);
    let request = pb::RecountRequest { namespace: args.namespace, counter_name: args.counter };
    let r = client.recount(request).await.map_err(|e| args.conn.error(e))?.into_inner();
    let until = time_text(r.checkpoint_until.as_ref());
    let oldest = time_text(r.oldest_event.as_ref());
    let value = json!({"checkpoint_count": r.checkpoint_count, "checkpoint_until": until, "recounted": r.recounted,
        "events": r.events, "oldest_event": oldest, "cleared": r.cleared, "agrees": r.agrees});
    let text = match &until {
        None => format!("{key}: never rolled up; nothing to recount"),
        Some(until) if r.agrees => format!(
            "{key}: checkpoint {} as of {until}; the {} kept events before it agree",
            r.checkpoint_count, r.events
        ),
        Some(until) => format!(
            "{key}: checkpoint {} as of {until}, but the {} kept events before it (oldest {}) fold to {}: \
             they differ by {}{}",
            r.checkpoint_count,
            r.events,
            oldest.as_deref().unwrap_or("none"),
            r.recounted,
            r.checkpoint_count.saturating_sub(r.recounted),
            if r.cleared {
                ""
            } else {
                " (events retention deleted before the oldest kept would explain it)"
            }
        ),
    };
    print(args.conn.json, value, text);
    anyhow::ensure!(r.agrees, "the checkpoint of {key} and its kept events differ");
    Ok(())
}

pub async fn clear(args: ClearArgs) -> anyhow::Result<()> {
    let mut client = args.conn.counters().await?;
    let key = format!("{}:{}", args.namespace, args.counter);
    let request = pb::ClearCountRequest {
        namespace: args.namespace,
        counter_name: args.counter,
        idempotency_token: args.token.to_proto()?,
    };
    let r = client.clear_count(request).await.map_err(|e| args.conn.error(e))?.into_inner();
    let value = json!({"applied": r.applied, "idempotency_token": token_json(r.idempotency_token.as_ref())});
    print(args.conn.json, value, format!("{} {key}", if r.applied { "cleared" } else { "already cleared:" }));
    Ok(())
}

fn namespace_value(n: &pb::Namespace) -> serde_json::Value {
    let d = |d: &Option<prost_types::Duration>| {
        d.as_ref()
            .map(|d| humantime::format_duration(Duration::new(d.seconds as u64, d.nanos as u32)).to_string())
    };
    let c = n.config.unwrap_or_default();
    json!({"name": n.name, "config": {
        "counter_type": type_text(c.counter_type), "accept_limit": d(&c.accept_limit), "clock_skew": d(&c.clock_skew),
        "coalesce": d(&c.coalesce), "retention": d(&c.retention), "cache_ttl": d(&c.cache_ttl),
        "best_effort_ttl": d(&c.best_effort_ttl), "idempotency_window": d(&c.idempotency_window)}})
}

fn namespace_text(n: &pb::Namespace) -> String {
    let v = namespace_value(n);
    let c = &v["config"];
    let field = |k: &str| c[k].as_str().unwrap_or("none").to_owned();
    format!(
        "{}: {} (accept_limit {}, clock_skew {}, coalesce {}, retention {}, cache_ttl {}, best_effort_ttl {}, idempotency_window {})",
        n.name,
        field("counter_type"),
        field("accept_limit"),
        field("clock_skew"),
        field("coalesce"),
        field("retention"),
        field("cache_ttl"),
        field("best_effort_ttl"),
        field("idempotency_window")
    )
}

pub async fn ns(command: NsCommand) -> anyhow::Result<()> {
    match command {
        NsCommand::Create { name, config, conn } => {
            let mut client = conn.namespaces().await?;
            let request = pb::CreateNamespaceRequest { name, config: Some(config.to_proto()?) };
            let n = client.create_namespace(request).await.map_err(|e| conn.error(e))?.into_inner();
            print(conn.json, namespace_value(&n), format!("created {}", namespace_text(&n)));
        }
        NsCommand::List { conn } => {
            let mut client = conn.namespaces().await?;
            let r = client
                .list_namespaces(pb::ListNamespacesRequest {})
                .await
                .map_err(|e| conn.error(e))?
                .into_inner();
            let value = json!({"namespaces": r.namespaces.iter().map(namespace_value).collect::<Vec<_>>()});
            let text = r.namespaces.iter().map(namespace_text).collect::<Vec<_>>().join("\n");
            print(conn.json, value, text);
        }
        NsCommand::Show { name, conn } => {
            let mut client = conn.namespaces().await?;
            let n = client
                .get_namespace(pb::GetNamespaceRequest { name })
                .await
                .map_err(|e| conn.error(e))?
                .into_inner();
            print(conn.json, namespace_value(&n), namespace_text(&n));
        }
        NsCommand::Update { name, config, conn } => {
            let mut client = conn.namespaces().await?;
            let request = pb::UpdateNamespaceRequest { name, config: Some(config.to_proto()?) };
            let n = client.update_namespace(request).await.map_err(|e| conn.error(e))?.into_inner();
            print(conn.json, namespace_value(&n), format!("updated {}", namespace_text(&n)));
        }
        NsCommand::Delete { name, conn } => {
            let mut client = conn.namespaces().await?;
            client
                .delete_namespace(pb::DeleteNamespaceRequest { name: name.clone() })
                .await
                .map_err(|e| conn.error(e))?;
            print(conn.json, json!({"deleted": name}), format!("deleted {name}"));
        }
    }
    Ok(())
}
