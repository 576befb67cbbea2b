//! lanectl: keeps worker containers ("lanes") in the state that a directory of
//! YAML manifests declares, through the Podman REST API.
//!
//! `main` is thin: parse the command line, start logging, run the command
//! (the library does the work), map what it returns to an exit code: the
//! numbers are decided here and nowhere else.

use std::process::ExitCode;

use clap::Parser;
use lanectl::{cli, cmd};

/// Exit codes: 0 ok, 1 failure, 2 `plan --detailed-exitcode` changes,
/// 64 usage error (never 2, so it cannot read as "changes").
fn code(exit: cmd::Exit) -> u8 {
    match exit {
        cmd::Exit::Ok => 0,
        cmd::Exit::Failed => EXIT_FAILURE,
        cmd::Exit::Changes => 2,
    }
}
const EXIT_FAILURE: u8 = 1;
const EXIT_USAGE: u8 = 64;

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
        Ok(exit) => ExitCode::from(code(exit)),
        Err(e) => {
            eprintln!("lanectl: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The daemon logs changes (`info`) by default; one-shot commands print
/// their own lines and log only warnings.
///
/// Whatever filter the user passes (`-vv`, `LANECTL_LOG=trace`), other
/// crates log at most `info`: below that, the HTTP client traces raw request
/// and response bodies (an inspect's `Config.Env`, a create's env), and env
/// values must never reach a log.
fn init_tracing(global: &cli::Global, daemon: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let level = match global.verbose {
        0 if daemon => "info",
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANECTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("lanectl={level},warn")));
    let filter = filter.and(tracing_subscriber::filter::filter_fn(never_secrets));
    // The journal stamps each line itself and shows no colour.
    let journal = stderr_is_journal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let layer = match (global.log_format, journal) {
        (cli::LogFormat::Json, _) => fmt.json().with_filter(filter).boxed(),
        (cli::LogFormat::Text, true) => fmt.without_time().with_filter(filter).boxed(),
        (cli::LogFormat::Text, false) => fmt.with_filter(filter).boxed(),
    };
    // Another subscriber already set (only in tests) is fine to keep.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Whether stderr is systemd's journal: `JOURNAL_STREAM` names its device
/// and inode (`dev:ino`), as systemd sets it for a unit's stderr.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// lanectl's own events at any level; other crates' at `info` and above.
fn never_secrets(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    let ours = target == "lanectl" || target.starts_with("lanectl::");
    ours || *meta.level() <= tracing::Level::INFO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_crates_never_log_below_info() {
        use tracing::Level;
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Cs;
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let meta = |target: &'static str, level: Level| {
            tracing::Metadata::new(
                "e",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&CS)),
                Kind::EVENT,
            )
        };
        assert!(never_secrets(&meta("lanectl::reconcile", Level::TRACE)));
        assert!(never_secrets(&meta("lanectl", Level::TRACE)));
        assert!(never_secrets(&meta(
            "containers_api::conn::client",
            Level::INFO
        )));
        for target in [
            "containers_api::conn::client",
            "podman_api::podman",
            "hyper::proto",
            "lanectlx",
        ] {
            assert!(!never_secrets(&meta(target, Level::TRACE)), "{target}");
            assert!(!never_secrets(&meta(target, Level::DEBUG)), "{target}");
        }
    }
}
