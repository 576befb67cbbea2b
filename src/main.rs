//! lanectl: keeps worker containers ("lanes") in the state that a directory of
//! YAML manifests declares, through the Podman REST API.
//!
//! `main` is thin: parse the command line, start logging, run the command,
//! map the result to an exit code (decided here, in one place).

mod cli;
mod cmd;
mod daemon;
mod desired;
mod error;
mod exec;
#[cfg(test)]
mod fuzz_tests;
mod hash;
mod labels;
mod lane;
mod manifest;
mod observe;
mod plan;
mod podman;
mod probe;
mod queue;
mod reconcile;
mod sources;
mod spec;
mod status;
mod yaml;

use std::process::ExitCode;

use clap::Parser;

/// Exit codes: 0 ok, 1 failure, 2 `plan --detailed-exitcode` changes,
/// 64 usage error (never 2, so it cannot read as "changes").
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CHANGES: u8 = 2;
pub const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let daemon = matches!(cli.command, cli::Command::Run { .. });
    init_tracing(&cli.global, daemon);
    match cmd::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("lanectl: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The daemon logs changes (`info`) by default; one-shot commands print
/// their own lines and log only warnings.
fn init_tracing(global: &cli::Global, daemon: bool) {
    let level = match global.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANECTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lanectl={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match global.log_format {
        cli::LogFormat::Json => builder.json().init(),
        cli::LogFormat::Text => builder.init(),
    }
}
