//! `tally`: the server and its command-line client in one binary.

mod client;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(serve::ServeArgs),
    /// AddCount: add DELTA (default 1) to a counter.
    Add(client::AddArgs),
    /// GetCount: read a counter.
    Get(client::GetArgs),
    /// ClearCount: set a counter to zero.
    Clear(client::ClearArgs),
    /// Manage namespaces.
    #[command(subcommand)]
    Ns(client::NsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
            Command::Ns(command) => client::ns(command).await,
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
