//! The command line: global flags and one enum of commands (SPEC.md,
//! "Command line"). Global flags may stand before or after the command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "lanectl",
    version,
    about = "Keep worker containers in the state a directory of YAML manifests declares"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The lanes directory.
    #[arg(long, global = true, default_value = "./lanes.d")]
    pub dir: PathBuf,
    /// Podman API URL (default: $CONTAINER_HOST, else the root or user socket).
    #[arg(long, global = true)]
    pub podman: Option<String>,
    /// Which lanes directory owns the containers (default: from its path).
    #[arg(long, global = true, value_parser = instance_id)]
    pub instance: Option<String>,
    /// How many lanes converge at once.
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging: -v debug, -vv trace.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Accept manifests, directories and sources writable by others (as root).
    #[arg(long, global = true)]
    pub allow_insecure_permissions: bool,
    /// This host's name: lanes whose `host` names another host are skipped
    /// (default: the machine's hostname).
    #[arg(long, global = true, value_parser = host_name)]
    pub host: Option<String>,
    /// How long to wait for another lanectl (a daemon, a hook) changing this
    /// directory's containers before giving up.
    #[arg(long, global = true, default_value = "5m", value_parser = parse_duration)]
    pub lock_wait: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Converge everything, then keep converging on changes (the daemon).
    Run {
        /// How often every lane is checked even without events.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        resync: std::time::Duration,
        /// Remove every container when the directory holds no manifest.
        #[arg(long)]
        allow_prune_all: bool,
        /// Serve Prometheus metrics at /metrics and a /healthz on this
        /// address (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Converge once; one line per lane.
    Apply {
        /// Only these lanes.
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
        /// Remove every container of this instance when the directory holds no manifest.
        #[arg(long)]
        allow_prune_all: bool,
        /// How to show the lanes' steps as they happen: auto (live lines on a
        /// terminal, else only the result lines), plain (a line per step, no
        /// control characters), json (NDJSON events), quiet (only lanes that
        /// did not converge).
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// The same as --progress quiet.
        #[arg(short, long, conflicts_with = "progress")]
        quiet: bool,
        /// Colour the phases (auto: on a terminal, unless NO_COLOR is set).
        #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
        color: ColorMode,
    },
    /// Show what apply would do and why; changes nothing.
    Plan {
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
        /// Exit 0 for no changes, 2 for changes, 1 for errors.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Under a spec change, each changed field's old -> new value (env
        /// and label values only as `(changed)`).
        #[arg(long)]
        diff: bool,
        /// A JSON array (lane, action, reason, fields) instead of lines.
        #[arg(long, conflicts_with = "diff")]
        json: bool,
    },
    /// The lanes' status files as a table; named lanes in full, with their
    /// history.
    Status {
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
        /// A JSON array instead.
        #[arg(long)]
        json: bool,
    },
    /// Check manifests; file:line:col: message per problem.
    Validate { paths: Vec<PathBuf> },
    /// Print the manifest's JSON Schema.
    Schema,
    /// Render the lanes (default all, of every host) for another system;
    /// needs no Podman.
    Render {
        #[command(subcommand)]
        to: RenderTo,
    },
    /// Remove this instance's containers (default all) and their status files.
    Down {
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
    },
    /// Print a completion script for a shell (e.g. `lanectl completions bash >
    /// /etc/bash_completion.d/lanectl`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), made from this command line's definition.
    #[command(hide = true)]
    Man,
    /// Wait until the lanes (default all) reached a state for their current
    /// manifest, defaults, codex and tracked content. Needs no Podman.
    Wait {
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
        /// The state to wait for (`ready` also takes `stopped` for a lane
        /// declared `state: stopped`).
        #[arg(long = "for", value_enum, default_value_t = WaitFor::Ready)]
        wait_for: WaitFor,
        /// Give up (exit 1) after this long.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
}

/// What `render` renders to.
#[derive(Debug, Subcommand)]
pub enum RenderTo {
    /// Kubernetes objects: per lane a Deployment, a Service for its ports
    /// and its codex as an immutable Secret. Deterministic YAML; what cannot
    /// map is a warning on stderr (file:line:col). An invalid lane exits 1
    /// and is left out.
    Kube {
        #[arg(value_parser = lane_name)]
        lanes: Vec<String>,
        /// Write one file per lane and a kustomization.yaml into DIR
        /// (default: one YAML stream on stdout). Files of lanes no longer
        /// rendered go; an invalid lane keeps its file from before.
        #[arg(short, long, value_name = "DIR")]
        output: Option<PathBuf>,
        /// metadata.namespace of every object (and of the kustomization).
        #[arg(long, value_name = "NS", value_parser = namespace)]
        namespace: Option<String>,
        /// What cannot map is an error, not a warning.
        #[arg(long)]
        strict: bool,
        /// Render even when there is no lane (applied with pruning, an
        /// empty render deletes every lane in the cluster).
        #[arg(long)]
        allow_prune_all: bool,
        /// The lanes directory's path on the nodes: a relative mount source
        /// becomes a hostPath under it (default: its path here, which makes
        /// the render depend on this machine).
        #[arg(long, value_name = "PATH")]
        node_dir: Option<PathBuf>,
    },
}

/// How `apply` shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    Auto,
    Plain,
    Json,
    Quiet,
}

/// Whether `apply` colours its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    Auto,
    Always,
    Never,
}

/// A shell `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitFor {
    Ready,
    Stopped,
    /// The lane's status file is gone (its manifest was deleted and the lane removed).
    Deleted,
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitFor::Ready => "ready",
            WaitFor::Stopped => "stopped",
            WaitFor::Deleted => "deleted",
        })
    }
}

/// A lane named on the command line follows the lane-name rule (so that it
/// can never reach outside the lanes directory, e.g. `../x`).
fn lane_name(name: &str) -> Result<String, String> {
    crate::lane::check_name(name).map(|()| name.to_string())
}

/// `--namespace`: a DNS-1123 label, as Kubernetes wants a namespace.
fn namespace(ns: &str) -> Result<String, String> {
    if crate::lanespec::is_dns_label(ns, true) {
        Ok(ns.to_string())
    } else {
        Err(
            "a namespace is at most 63 lowercase letters, digits and '-' (not first or last)"
                .into(),
        )
    }
}

/// `--host`: a hostname, as a lane's `host` must be.
fn host_name(name: &str) -> Result<String, String> {
    crate::lanespec::check_host(name).map(|()| name.to_string())
}

impl Global {
    /// How the lanes directory is read, as these flags say.
    /// This host's name: `--host`, else the machine's hostname.
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(this_host)
    }

    pub fn load_options(&self) -> crate::desired::LoadOptions {
        crate::desired::LoadOptions {
            allow_insecure_permissions: self.allow_insecure_permissions,
            host: Some(self.host()),
            mounts: crate::lanespec::MountsOn::ThisMachine,
        }
    }
}

/// The machine's hostname (empty when it has none: then only lanes without
/// `host` are this host's).
pub fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its whole length, which is passed.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `--instance`: see [`labels::instance_id`](crate::labels::instance_id).
pub fn instance_id(id: &str) -> Result<String, String> {
    crate::labels::instance_id(id)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30s, 5m)"))?;
    if d < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_that_a_label_filter_could_misread_is_refused() {
        for bad in [
            "",
            " ",
            "a b",
            "a=b",
            "a,b",
            "a\tb",
            "é",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(instance_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["it-test-1", "abc123def456", "A_b.c-d", &"x".repeat(63)] {
            assert_eq!(instance_id(good).as_deref(), Ok(good));
        }
    }
}
