//! `tally`: the server and its command-line client in one binary.

mod bench;
mod check;
mod client;
mod series;
mod serve;
mod transfer;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tally: exactly-once distributed counters.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded store; HTTP on 127.0.0.1:7080, gRPC on 127.0.0.1:7090).
    #[command(after_help = "Environment (overrides the config file; flags override both): \
        TALLY_DATA_DIR, TALLY_STORE, TALLY_CACHE, TALLY_PEERS, TALLY_ADVERTISE, TALLY_HTTP, \
        TALLY_GRPC, TALLY_RESP, TALLY_OPS, TALLY_LOG (a filter such as info), TALLY_LOG_FORMAT (text or json).")]
    Serve(serve::ServeArgs),
    /// AddCount: add DELTA (default 1) to a counter.
    Add(client::AddArgs),
    /// GetCount: read a counter.
    Get(client::GetArgs),
    /// ClearCount: set a counter to zero.
    Clear(client::ClearArgs),
    /// ListCounters: the counters of a namespace with their counts.
    Ls(client::LsArgs),
    /// ListEvents: a counter's events (its history), oldest first.
    Events(client::EventsArgs),
    /// Recount: check a counter's checkpoint against the events it covers that are still kept.
    Recount(client::RecountArgs),
    /// GetCountSeries: a counter's adds per time bucket, as a sparkline.
    Series(series::SeriesArgs),
    /// Manage namespaces.
    #[command(subcommand)]
    Ns(client::NsCommand),
    /// Write every namespace and counter (or those of --namespace) as JSON lines, from a running server.
    Export(transfer::ExportArgs),
    /// Create the namespaces and add the counts of an export, into a running server.
    Import(transfer::ImportArgs),
    /// Load generator for the gRPC, HTTP and RESP front doors.
    Bench(bench::BenchArgs),
    /// Run a counter workload while injecting faults, then check every count (RELIABILITY.md).
    Check(check::CheckArgs),
    /// Compact a stopped server's data directory fully and print its size on disk.
    Compact {
        /// The data directory.
        #[arg(long, default_value = "./tally-data")]
        data_dir: std::path::PathBuf,
    },
    /// Print a completion script for SHELL (e.g. `tally completions bash > /etc/bash_completion.d/tally`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

/// Opens the store (it must not be in use), compacts it and prints the bytes it occupies.
async fn compact(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let clock = std::sync::Arc::new(tally_core::SystemClock);
    let store = tally_store_fjall::FjallStore::open(dir, clock, tally_store_fjall::FjallOptions::default())
        .with_context(|| format!("cannot open {} (is a server using it?)", dir.display()))?;
    let before = store.disk_space()?;
    store.compact().await?;
    let after = store.disk_space()?;
    let journal = store.journal_disk_space()?;
    println!(
        "{}: {before} bytes before compaction, {after} bytes after: {} in tables, {journal} in the write-ahead journal (kept until it passes 64 MB)",
        dir.display(),
        after.saturating_sub(journal)
    );
    Ok(())
}

/// `tally --version`: the version, the commit and the features this binary was built with.
fn version() -> &'static str {
    let features: Vec<&str> = [("tls", cfg!(feature = "tls")), ("mimalloc", cfg!(feature = "mimalloc"))]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
    let text = format!(
        "{} (commit {}, features: {})",
        env!("CARGO_PKG_VERSION"),
        tally_server::COMMIT,
        if features.is_empty() { "none".to_owned() } else { features.join(", ") }
    );
    // Once per process, for clap, which keeps it for the program's life.
    Box::leak(text.into_boxed_str())
}

fn main() -> ExitCode {
    let command = <Cli as clap::CommandFactory>::command().version(version());
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Add(args) => client::add(args).await,
            Command::Get(args) => client::get(args).await,
            Command::Clear(args) => client::clear(args).await,
            Command::Ls(args) => client::ls(args).await,
            Command::Events(args) => client::events(args).await,
            Command::Recount(args) => client::recount(args).await,
            Command::Series(args) => series::run(args).await,
            Command::Ns(command) => client::ns(command).await,
            Command::Export(args) => transfer::export(args).await,
            Command::Import(args) => transfer::import(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Compact { data_dir } => compact(&data_dir).await,
            Command::Completions { shell } => {
                let mut cli = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cli, "tally", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime every command runs on.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // A gRPC call's response wakes its connection's task. Through tokio's LIFO slot that task
    // runs right away and writes the one response with a syscall of its own; without the slot
    // it runs after the other calls the same group commit answered, and writes their
    // responses together: a tenth of the `writev` calls and about a sixth less CPU per gRPC
    // add (BENCHMARKS.md, "One write for many gRPC responses"). tokio keeps the switch behind
    // `--cfg tokio_unstable`, which .cargo/config.toml sets.
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn serve_help_names_every_environment_variable() {
        let mut cli = super::Cli::command();
        let help = cli.find_subcommand_mut("serve").expect("serve").render_long_help().to_string();
        for (var, _) in tally_server::config::ENV_OVERRIDES {
            assert!(help.contains(var), "`tally serve --help` does not name {var}");
        }
    }
}
