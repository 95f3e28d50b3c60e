//! `tributary`: the binary. Parses flags, wires the roles together, binds the port.

mod bench;
mod config;
mod format;
mod grpc;
mod http;
mod serve;

use clap::{Parser, Subcommand};

/// jemalloc rather than glibc's malloc: decoding Parquet allocates and frees page buffers of
/// every size, and glibc's slow paths (`malloc_consolidate`, `unlink_chunk`) were ~8 % of a
/// query's CPU. Measured: double-groupby and high-cpu-all ~15 % faster, ingest unchanged,
/// ingest peak RSS ~25 MiB higher. (mimalloc was as fast on queries but took 15 % more CPU
/// and 35 % more RSS on ingest.)
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
