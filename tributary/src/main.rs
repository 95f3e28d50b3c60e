//! `tributary`: the binary. Parses flags, wires the roles together, binds the port.

mod bench;
mod config;
mod format;
mod grpc;
mod http;
mod serve;

use clap::{Parser, Subcommand};

/// Tributary: a streaming time-series database for InfluxDB line protocol and SQL.
#[derive(Debug, Parser)]
#[command(name = "tributary", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: HTTP write and query API on one port.
    Serve(Box<config::ServeConfig>),
    /// Load generators that measure a running server.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Write the TSBS cpu-only data set over HTTP and report lines/s, CPU and RSS.
    Write(bench::WriteBenchConfig),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve::main(*config),
        Command::Bench(BenchCommand::Write(config)) => match bench::main(config) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
