//! `RawManifest` -> `LaneSpec`: defaults applied, paths resolved, every rule
//! of SPEC.md's "Manifest" section checked, and every problem returned.
//!
//! What the files alone show is decided here (an `invalid` lane); what needs
//! Podman (a missing image, a name held by someone else) is not. Cross-lane
//! rules (two lanes with one container name) live in [`check_across`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::labels;
use crate::manifest::{
    DesiredState, DurationText, Loaded, Problem, Protocol, RawCodex, RawMount, RawPort, RawProbe,
    RawResources, Relabel, Seg, Words,
};

/// A lane's desired container, resolved and valid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneSpec {
    pub lane: String,
    pub image: String,
    pub container_name: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub ports: Vec<Port>,
    pub codex: Option<Codex>,
    pub resources: Resources,
    #[serde(skip)]
    pub probe: Option<Probe>,
    #[serde(skip)]
    pub stop_timeout: Duration,
    #[serde(skip)]
    pub state: DesiredState,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// Absolute, made so lexically (symlinks are not resolved).
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    pub relabel: Relabel,
    pub track_content: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Port {
    pub container: u16,
    pub host_ip: String,
    pub host_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Codex {
    #[serde(skip)]
    pub source: PathBuf,
    pub target: String,
    pub fingerprint_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The container port; always one of the lane's published tcp ports.
    pub port: u16,
    pub path: String,
    pub timeout: Duration,
    pub interval: Duration,
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// Resolves a loaded manifest; `dir` is the manifest's directory. Every
/// field is checked (one function per section, in the manifest's order), so
/// that one look at the lane shows every problem at once.
pub fn resolve(lane: &str, loaded: &Loaded, dir: &Path) -> Result<LaneSpec, Vec<Problem>> {
    let raw = &loaded.raw;
    let mut c = Checker {
        loaded,
        dir,
        problems: Vec::new(),
    };
    let image = c.image(raw.image.as_deref());
    let container_name = c.container_name(lane, raw.container_name.as_deref());
    let entrypoint = c.words("entrypoint", raw.entrypoint.as_ref());
    let command = c.words("command", raw.command.as_ref());
    c.workdir(raw.workdir.as_deref());
    let env = raw.env.clone().unwrap_or_default();
    let user_labels = raw.labels.clone().unwrap_or_default();
    let codex = raw.codex.as_ref().map(|codex| c.codex(codex, &env));
    let mounts = c.mounts(raw.mounts.as_deref().unwrap_or_default(), codex.as_ref());
    let ports = c.ports(raw.ports.as_deref().unwrap_or_default());
    let stop_timeout = c.duration(
        &[Seg::Key("stop_timeout")],
        raw.stop_timeout.as_ref(),
        DEFAULT_STOP_TIMEOUT,
    );
    let probe = c.probe(raw.probe.as_ref(), &ports);
    let resources = c.resources(raw.resources.as_ref());
    // Names are reported after every other problem.
    c.names("env", "env", &env);
    c.names("labels", "label", &user_labels);

    if !c.problems.is_empty() {
        return Err(c.problems);
    }
    Ok(LaneSpec {
        lane: lane.to_string(),
        image,
        container_name,
        user: raw.user.clone(),
        entrypoint,
        command,
        workdir: raw.workdir.clone(),
        env,
        labels: user_labels,
        mounts,
        ports,
        codex,
        resources,
        probe,
        stop_timeout,
        state: raw.state.unwrap_or_default(),
    })
}

/// One manifest being checked: where it is, and every problem found so far.
struct Checker<'a> {
    loaded: &'a Loaded,
    dir: &'a Path,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn bad(&mut self, path: &[Seg], msg: String) {
        self.problems.push(self.loaded.problem(path, msg));
    }

    fn image(&mut self, image: Option<&str>) -> String {
        match image.map(str::trim) {
            Some(i) if !i.is_empty() => i.to_string(),
            _ => {
                self.bad(
                    &[Seg::Key("image")],
                    "`image` is required (here or in _defaults.yaml)".into(),
                );
                String::new()
            }
        }
    }

    fn container_name(&mut self, lane: &str, name: Option<&str>) -> String {
        let name = name.map_or_else(|| format!("lane-{lane}"), str::to_string);
        if !valid_container_name(&name) {
            self.bad(
                &[Seg::Key("container_name")],
                format!("container name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
            );
        }
        name
    }

    fn words(&mut self, key: &'static str, words: Option<&Words>) -> Option<Vec<String>> {
        match words?.split() {
            Ok(v) => Some(v),
            Err(e) => {
                self.bad(&[Seg::Key(key)], e);
                None
            }
        }
    }

    fn workdir(&mut self, workdir: Option<&str>) {
        if let Some(w) = workdir
            && !w.starts_with('/')
        {
            self.bad(
                &[Seg::Key("workdir")],
                format!("workdir {w:?} must be an absolute path"),
            );
        }
    }

    /// Env and label names. Names may be shown, values never: a name is shown
    /// up to a first `=`, since `NAME=value` typed as a key holds a value after it.
    fn names(&mut self, field: &'static str, what: &str, names: &BTreeMap<String, String>) {
        for key in names.keys() {
            let shown = crate::yaml::shown_key(key);
            let why = if key.is_empty() {
                format!("{what} name must not be empty")
            } else if key.contains('=') {
                format!("{what} name `{shown}` must not contain '='")
            } else if key.contains('\0') {
                format!("{what} name `{shown}` must not contain a NUL byte")
            } else if key
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
            {
                // `{API_TOKEN:sk-…}` is one key with no value: the value would
                // become part of the name, and names are shown.
                format!(
                    "{what} name `{shown}` must not contain ':' or whitespace \
                     (write `NAME: value`, with a space after the colon)"
                )
            } else if field == "labels" && key.starts_with(labels::PREFIX) {
                format!(
                    "label `{shown}`: {}* is reserved for lanectl",
                    labels::PREFIX
                )
            } else {
                continue;
            };
            let problem = self.loaded.key_problem(&[Seg::Key(field)], key, why);
            self.problems.push(problem);
        }
    }

    fn codex(&mut self, c: &RawCodex, env: &BTreeMap<String, String>) -> Codex {
        let at = |k| [Seg::Key("codex"), Seg::Key(k)];
        if !c.target.starts_with('/') {
            self.bad(
                &at("target"),
                format!("codex target {:?} must be an absolute path", c.target),
            );
        } else if let Err(e) = crate::content::archive_prefix(&normalize_target(&c.target)) {
            // The archive's own rule (`/` is refused), so that what the copy would
            // refuse is an invalid lane before anything is created.
            self.bad(&at("target"), e.to_string());
        }
        let source = absolute(self.dir, &c.source);
        match source_kind(&source) {
            Ok(SourceKind::Dir) => {}
            Ok(other) => self.bad(
                &at("source"),
                format!(
                    "codex source {} is {other}, not a directory",
                    source.display()
                ),
            ),
            Err(e) => self.bad(
                &at("source"),
                format!("codex source {}: {e}", source.display()),
            ),
        }
        if let Some(name) = &c.fingerprint_env
            && env.contains_key(name)
        {
            self.bad(
                &at("fingerprint_env"),
                format!("{name} is also set in env: pick one"),
            );
        }
        Codex {
            source,
            target: normalize_target(&c.target),
            fingerprint_env: c.fingerprint_env.clone(),
        }
    }

    fn mounts(&mut self, raw: &[RawMount], codex: Option<&Codex>) -> Vec<Mount> {
        let mut mounts: Vec<Mount> = Vec::new();
        for (i, m) in raw.iter().enumerate() {
            let at = |k| [Seg::Key("mounts"), Seg::Index(i), Seg::Key(k)];
            let source = absolute(self.dir, &m.source);
            match source_kind(&source) {
                Ok(SourceKind::Dir | SourceKind::File) => {}
                Ok(other) => self.bad(
                    &at("source"),
                    format!(
                        "mount source {} is {other}: only files and directories are mounted",
                        source.display()
                    ),
                ),
                Err(e) => self.bad(
                    &at("source"),
                    format!("mount source {}: {e}", source.display()),
                ),
            }
            if !m.target.starts_with('/') {
                self.bad(
                    &at("target"),
                    format!("mount target {:?} must be an absolute path", m.target),
                );
            }
            let target = normalize_target(&m.target);
            if mounts.iter().any(|o| o.target == target) {
                self.bad(&at("target"), format!("two mounts at {target}"));
            }
            if let Some(c) = codex
                && overlaps(&target, &c.target)
            {
                self.bad(
                    &at("target"),
                    format!(
                        "mount at {target} would hide or be inside the codex target {}",
                        c.target
                    ),
                );
            }
            mounts.push(Mount {
                source,
                target,
                read_only: m.read_only,
                relabel: m.relabel,
                track_content: m.track_content,
            });
        }
        mounts
    }

    fn ports(&mut self, raw: &[RawPort]) -> Vec<Port> {
        let mut ports: Vec<Port> = Vec::new();
        for (i, p) in raw.iter().enumerate() {
            let at = |k| [Seg::Key("ports"), Seg::Index(i), Seg::Key(k)];
            if p.container == 0 {
                self.bad(&at("container"), "container port must be 1-65535".into());
            }
            let host_ip = p.host_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
            if host_ip.parse::<IpAddr>().is_err() {
                self.bad(
                    &at("host_ip"),
                    format!("host_ip {host_ip:?} is not an IP address"),
                );
            }
            if ports
                .iter()
                .any(|o| o.container == p.container && o.protocol == p.protocol)
            {
                self.bad(
                    &at("container"),
                    format!("port {}/{} listed twice", p.container, p.protocol),
                );
            }
            ports.push(Port {
                container: p.container,
                host_ip,
                host_port: p.host_port.unwrap_or(0),
                protocol: p.protocol,
            });
        }
        ports
    }

    fn duration(
        &mut self,
        path: &[Seg],
        text: Option<&DurationText>,
        default: Duration,
    ) -> Duration {
        let Some(DurationText(t)) = text else {
            return default;
        };
        humantime::parse_duration(t).unwrap_or_else(|e| {
            self.bad(
                path,
                format!("duration {t:?}: {e} (write e.g. 250ms, 30s, 1m)"),
            );
            default
        })
    }

    /// A lane with a published tcp port is probed (with the defaults when it
    /// has no `probe` section); a lane without one is ready once running.
    fn probe(&mut self, raw: Option<&RawProbe>, ports: &[Port]) -> Option<Probe> {
        let first_tcp = ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.container);
        let default_probe = first_tcp.map(|_| RawProbe::default());
        let p = raw.or(default_probe.as_ref())?;
        let at = |k| [Seg::Key("probe"), Seg::Key(k)];
        let probe = Probe {
            port: p.port.or(first_tcp).unwrap_or(0),
            path: p.path.clone().unwrap_or_else(|| "/".into()),
            timeout: self.duration(&at("timeout"), p.timeout.as_ref(), DEFAULT_PROBE_TIMEOUT),
            interval: self.duration(&at("interval"), p.interval.as_ref(), DEFAULT_PROBE_INTERVAL),
        };
        let published = ports
            .iter()
            .any(|q| q.container == probe.port && q.protocol == Protocol::Tcp);
        if !published {
            self.bad(
                &at("port"),
                format!(
                    "probe port {} is not a published tcp port of this lane",
                    probe.port
                ),
            );
        }
        if probe.interval < MIN_PROBE_INTERVAL {
            self.bad(
                &at("interval"),
                format!(
                    "probe interval must be at least {}",
                    humantime::format_duration(MIN_PROBE_INTERVAL)
                ),
            );
        }
        if probe.timeout.is_zero() {
            self.bad(&at("timeout"), "probe timeout must be positive".into());
        }
        if !probe.path.starts_with('/') {
            self.bad(&at("path"), "probe path must start with /".into());
        }
        Some(probe)
    }

    fn resources(&mut self, raw: Option<&RawResources>) -> Resources {
        let mut resources = Resources::default();
        let Some(r) = raw else {
            return resources;
        };
        let at = |k| [Seg::Key("resources"), Seg::Key(k)];
        if let Some(m) = &r.memory {
            match parse_memory(m) {
                Some(b) => resources.memory_bytes = Some(b),
                None => self.bad(
                    &at("memory"),
                    format!("memory {m:?}: write bytes or e.g. 512m, 2g"),
                ),
            }
        }
        if let Some(c) = r.cpus {
            if !(c > 0.0 && c.is_finite()) {
                self.bad(&at("cpus"), "cpus must be a positive number".into());
            }
            resources.cpus = Some(c);
        }
        if r.pids == Some(0) {
            self.bad(&at("pids"), "pids must be positive".into());
        }
        resources.pids = r.pids;
        resources
    }
}

/// Cross-lane rules: two lanes with one container name are both invalid.
pub fn check_across(specs: &BTreeMap<String, (LaneSpec, &Loaded)>) -> HashMap<String, Problem> {
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for (lane, (spec, _)) in specs {
        by_name.entry(&spec.container_name).or_default().push(lane);
    }
    let mut out = HashMap::new();
    for (name, lanes) in by_name.into_iter().filter(|(_, l)| l.len() > 1) {
        for lane in &lanes {
            let others: Vec<&str> = lanes.iter().copied().filter(|l| l != lane).collect();
            let loaded = specs[*lane].1;
            out.insert(
                lane.to_string(),
                loaded.problem(
                    &[Seg::Key("container_name")],
                    format!(
                        "container name {name} is also used by lane {}",
                        others.join(", ")
                    ),
                ),
            );
        }
    }
    out
}

/// What a host path is, following symlinks.
#[derive(Debug, PartialEq, Eq)]
enum SourceKind {
    Dir,
    File,
    Special(&'static str),
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Dir => f.write_str("a directory"),
            SourceKind::File => f.write_str("a file"),
            SourceKind::Special(what) => f.write_str(what),
        }
    }
}

/// Resolves a source path; a dangling link or a loop is an error that says so.
fn source_kind(path: &Path) -> Result<SourceKind, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if path.symlink_metadata().is_ok() => {
            "is a dangling symlink".to_string()
        }
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ if e.raw_os_error() == Some(libc::ELOOP) => "is a symlink loop".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    let t = meta.file_type();
    Ok(if t.is_dir() {
        SourceKind::Dir
    } else if t.is_file() {
        SourceKind::File
    } else if t.is_fifo() {
        SourceKind::Special("a FIFO")
    } else if t.is_socket() {
        SourceKind::Special("a socket")
    } else {
        SourceKind::Special("a device")
    })
}

/// `source` against `dir` when relative, with `.` and `..` folded lexically;
/// a relative `dir` (`--dir lanes.d`) is taken from the working directory.
pub fn absolute(dir: &Path, source: &str) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let joined = dir.join(source);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A container path without `.`/`..`/double slashes or a trailing slash.
fn normalize_target(target: &str) -> String {
    let s = absolute(Path::new("/"), target.trim_start_matches('/'));
    s.to_string_lossy().into_owned()
}

/// True when one path is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || y == "/" || x.starts_with(&format!("{y}/"));
    inside(a, b) || inside(b, a)
}

fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 128
}

/// `512m` -> bytes (powers of 1024); a bare number is bytes.
fn parse_memory(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t); // 512mb, 1024b
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    // Podman takes the limit as an i64.
    n.checked_mul(mult)
        .filter(|b| *b > 0 && i64::try_from(*b).is_ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::{load, read_source};

    /// A fixed spec with every field set, for the hash's golden test.
    pub(crate) fn golden_spec() -> LaneSpec {
        LaneSpec {
            lane: "alpha".into(),
            image: "localhost/lane-worker:dev".into(),
            container_name: "lane-alpha".into(),
            user: Some("root".into()),
            entrypoint: Some(vec!["/usr/local/bin/lane-worker".into()]),
            command: Some(vec!["serve".into()]),
            workdir: Some("/workspace".into()),
            env: BTreeMap::from([("INBOX_LANE_ID".into(), "alpha".into())]),
            labels: BTreeMap::from([("team".into(), "infra".into())]),
            mounts: vec![Mount {
                source: PathBuf::from("/srv/worktrees/alpha"),
                target: "/workspace".into(),
                read_only: false,
                relabel: Relabel::Shared,
                track_content: true,
            }],
            ports: vec![Port {
                container: 31417,
                host_ip: "127.0.0.1".into(),
                host_port: 0,
                protocol: Protocol::Tcp,
            }],
            codex: Some(Codex {
                source: PathBuf::from("/srv/codex/alpha"),
                target: "/root/.codex".into(),
                fingerprint_env: Some("INBOX_RUNTIME_CODEX_SHA".into()),
            }),
            resources: Resources {
                memory_bytes: Some(512 << 20),
                cpus: Some(1.5),
                pids: Some(256),
            },
            probe: None,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            state: DesiredState::Running,
        }
    }

    #[test]
    fn state_probe_and_stop_timeout_are_not_in_the_hash() {
        let a = golden_spec();
        let mut b = golden_spec();
        b.state = DesiredState::Stopped;
        b.stop_timeout = Duration::from_secs(99);
        b.probe = Some(Probe {
            port: 31417,
            path: "/x".into(),
            timeout: Duration::from_secs(1),
            interval: Duration::from_secs(1),
        });
        b.codex.as_mut().unwrap().source = PathBuf::from("/elsewhere");
        let h = |s: &LaneSpec| crate::hash::lane_hash(s, "img", None, &[]);
        assert_eq!(h(&a), h(&b));
        b.env.insert("NEW".into(), "1".into());
        assert_ne!(h(&a), h(&b));
    }

    fn resolve_text(text: &str) -> Result<LaneSpec, Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("codex")).unwrap();
        std::fs::create_dir(dir.path().join("work")).unwrap();
        let path = dir.path().join("alpha.yaml");
        std::fs::write(&path, text).unwrap();
        let loaded = load(read_source(&path).unwrap(), None).unwrap();
        resolve("alpha", &loaded, dir.path())
    }

    /// Every problem of a manifest, from reading, typing or resolving it.
    fn problems_of(text: &str) -> Vec<Problem> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha.yaml");
        std::fs::write(&path, text).unwrap();
        let loaded = read_source(&path).and_then(|s| load(s, None));
        match loaded.and_then(|l| resolve("alpha", &l, dir.path())) {
            Ok(_) => panic!("{text:?} is a valid manifest"),
            Err(problems) => problems,
        }
    }

    /// A planted value that no message may quote.
    const SECRET: &str = "sk-S3CR3T";

    #[test]
    fn no_typo_around_an_env_or_label_value_quotes_it() {
        // (manifest after `image: i\n`, position of the first problem, a
        // word its message has)
        let cases = [
            ("env: {API_TOKEN=sk-S3CR3T}\n", (2, 7), "`API_TOKEN=…`"),
            ("env:\n  API_TOKEN=sk-S3CR3T:\n", (3, 3), "`API_TOKEN=…`"),
            (
                "env:\n  \"API_TOKEN=sk-S3CR3T\": x\n",
                (3, 3),
                "`API_TOKEN=…`",
            ),
            ("env: \"API_TOKEN=sk-S3CR3T\"\n", (2, 6), "found a string"),
            ("env: 'API_TOKEN=sk-S3CR3T'\n", (2, 6), "found a string"),
            ("env: API_TOKEN=sk-S3CR3T\n", (2, 6), "found a string"),
            ("env:\n  API_TOKEN=sk-S3CR3T\n", (3, 3), "found a string"),
            ("env: sk-S3CR3T\n", (2, 6), "found a string"),
            ("env: |\n  API_TOKEN=sk-S3CR3T\n", (3, 3), "found a string"),
            ("env: {A: [sk-S3CR3T]}\n", (2, 10), "found a list"),
            ("env: {A: {x: sk-S3CR3T}}\n", (2, 10), "found a map"),
            ("env:\n  A:\n    - sk-S3CR3T\n", (4, 5), "found a list"),
            ("env: [{A: sk-S3CR3T}]\n", (2, 7), "found a map"),
            ("env:\n  - A: sk-S3CR3T\n", (3, 5), "found a map"),
            ("env: [sk-S3CR3T]\n", (2, 7), "host environment"),
            ("env: ['sk-S3CR3T']\n", (2, 7), "host environment"),
            ("env:\n  - sk-S3CR3T\n", (3, 5), "host environment"),
            ("env: [=sk-S3CR3T]\n", (2, 7), "empty"),
            ("env: [A=1, A=sk-S3CR3T]\n", (2, 12), "`A`"),
            ("env: [[sk-S3CR3T]]\n", (2, 7), "found a list"),
            ("labels: \"team=sk-S3CR3T\"\n", (2, 9), "found a string"),
            ("labels: team=sk-S3CR3T\n", (2, 9), "found a string"),
            ("labels: {team=sk-S3CR3T}\n", (2, 10), "`team=…`"),
            (
                "labels: {io.lanectl.x=sk-S3CR3T: y}\n",
                (2, 10),
                "`io.lanectl.x=…`",
            ),
            ("labels: [{team: sk-S3CR3T}]\n", (2, 10), "found a map"),
            ("labels: [sk-S3CR3T]\n", (2, 10), "no '='"),
            ("API_TOKEN=sk-S3CR3T: x\n", (2, 1), "`API_TOKEN=…`"),
            ("env: {A: 1, A: sk-S3CR3T}\n", (2, 13), "duplicate"),
            // No space after the colon, or none at all: one plain key.
            ("env: {API_TOKEN:sk-S3CR3T}\n", (2, 7), "`API_TOKEN:…`"),
            ("env: {API_TOKEN sk-S3CR3T}\n", (2, 7), "`API_TOKEN …`"),
            ("env:\n  API_TOKEN sk-S3CR3T:\n", (3, 3), "`API_TOKEN …`"),
            (
                "env: {\"API_TOKEN\\tsk-S3CR3T\": x}\n",
                (2, 7),
                "`API_TOKEN\\t…`",
            ),
            (
                "env: {A: 1, \"A:sk-S3CR3T\": 2, \"A:sk-S3CR3T\": 3}\n",
                (2, 31),
                "duplicate",
            ),
        ];
        for (text, at, word) in cases {
            let text = format!("image: i\n{text}");
            let problems = problems_of(&text);
            for p in &problems {
                assert!(!p.to_string().contains(SECRET), "{text:?} quoted: {p}");
            }
            let first = &problems[0];
            let pos = first.pos.as_ref().map(|p| (p.line, p.column));
            assert_eq!(pos, Some(at), "{text:?}: {first}");
            assert!(first.message.contains(word), "{text:?}: {first}");
        }
    }

    #[test]
    fn the_list_form_gives_the_same_hash_as_the_map_form() {
        let map =
            resolve_text("image: i\nenv: {API_TOKEN: sk-1, B: 2, C: ''}\nlabels: {team: infra}\n")
                .unwrap();
        let list =
            resolve_text("image: i\nenv: [API_TOKEN=sk-1, B=2, C=]\nlabels:\n  - team=infra\n")
                .unwrap();
        assert_eq!(map, list);
        let h = |s: &LaneSpec| crate::hash::lane_hash(s, "img", None, &[]);
        assert_eq!(h(&map), h(&list));
    }

    #[test]
    fn defaults_are_applied() {
        let spec = resolve_text("image: img\nports: [{container: 80}]\nprobe: {}\n").unwrap();
        assert_eq!(spec.container_name, "lane-alpha");
        assert_eq!(spec.ports[0].host_ip, "127.0.0.1");
        assert_eq!(spec.ports[0].host_port, 0);
        let probe = spec.probe.unwrap();
        assert_eq!((probe.port, probe.path.as_str()), (80, "/"));
        assert_eq!(probe.timeout, Duration::from_secs(30));
        assert_eq!(probe.interval, Duration::from_millis(250));
        assert_eq!(spec.stop_timeout, Duration::from_secs(10));
        assert_eq!(spec.state, DesiredState::Running);
    }

    #[test]
    fn relative_sources_resolve_against_the_manifest_directory() {
        let spec =
            resolve_text("image: i\nmounts: [{source: ./work/../work, target: /w}]\n").unwrap();
        assert!(spec.mounts[0].source.is_absolute());
        assert!(spec.mounts[0].source.ends_with("work"));
        assert!(!spec.mounts[0].source.to_string_lossy().contains(".."));
    }

    #[test]
    fn every_rule_violation_is_reported_with_its_line() {
        let problems = resolve_text(
            "image: i\n\
             mounts:\n  - {source: nope, target: rel}\n  - {source: work, target: /root}\n\
             codex: {source: codex, target: /root/.codex}\n\
             ports: [{container: 80, protocol: udp}]\n\
             probe: {port: 80}\n\
             stop_timeout: 10\n",
        )
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        let joined = text.join("\n");
        assert!(
            joined.contains(":3:") && joined.contains("does not exist"),
            "{joined}"
        );
        assert!(joined.contains("must be an absolute path"), "{joined}");
        assert!(
            joined.contains(":4:") && joined.contains("codex target"),
            "{joined}"
        );
        assert!(joined.contains("not a published tcp port"), "{joined}");
        assert!(
            joined.contains(":8:") && joined.contains("duration"),
            "{joined}"
        );
    }

    #[test]
    fn a_codex_target_of_the_container_root_is_refused() {
        for target in ["/", "//", "/root/..", "/./"] {
            let problems = resolve_text(&format!(
                "image: i\ncodex: {{source: codex, target: {target:?}}}\n"
            ))
            .unwrap_err();
            assert_eq!(problems.len(), 1, "{target}: {problems:?}");
            let text = problems[0].to_string();
            assert!(
                text.contains(":2:") && text.contains("codex target"),
                "{text}"
            );
        }
        resolve_text("image: i\ncodex: {source: codex, target: /root/../c}\n").unwrap();
    }

    #[test]
    fn a_lane_with_a_tcp_port_is_probed_by_default_and_one_without_is_not() {
        let spec = resolve_text("image: i\nports: [{container: 8080}]\n").unwrap();
        let probe = spec.probe.unwrap();
        assert_eq!((probe.port, probe.path.as_str()), (8080, "/"));
        let spec = resolve_text("image: i\nports: [{container: 53, protocol: udp}]\n").unwrap();
        assert!(spec.probe.is_none());
        assert!(resolve_text("image: i\n").unwrap().probe.is_none());
    }

    #[test]
    fn a_zero_probe_interval_is_refused() {
        let problems = resolve_text("image: i\nports: [{container: 80}]\nprobe: {interval: 0s}\n")
            .unwrap_err();
        assert!(problems[0].message.contains("interval"), "{problems:?}");
    }

    #[test]
    fn special_and_broken_sources_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::os::unix::fs::symlink(p.join("loop-b"), p.join("loop-a")).unwrap();
        std::os::unix::fs::symlink(p.join("loop-a"), p.join("loop-b")).unwrap();
        std::os::unix::fs::symlink(p.join("nowhere"), p.join("dangling")).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(p.join("fifo"))
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(
            source_kind(&p.join("loop-a")),
            Err("is a symlink loop".into())
        );
        assert_eq!(
            source_kind(&p.join("dangling")),
            Err("is a dangling symlink".into())
        );
        assert_eq!(
            source_kind(&p.join("missing")),
            Err("does not exist".into())
        );
        assert_eq!(
            source_kind(&p.join("fifo")),
            Ok(SourceKind::Special("a FIFO"))
        );
        assert_eq!(
            source_kind(Path::new("/dev/null")),
            Ok(SourceKind::Special("a device"))
        );
        assert_eq!(source_kind(p), Ok(SourceKind::Dir));
    }

    #[test]
    fn a_missing_image_is_invalid() {
        let problems = resolve_text("user: root\n").unwrap_err();
        assert!(problems[0].message.contains("image"));
    }

    #[test]
    fn reserved_labels_are_refused() {
        assert!(resolve_text("image: i\nlabels: {io.lanectl.lane: x}\n").is_err());
    }

    #[test]
    fn memory_sizes_parse() {
        assert_eq!(parse_memory("512m"), Some(512 << 20));
        assert_eq!(parse_memory("2G"), Some(2 << 30));
        assert_eq!(parse_memory("1024"), Some(1024));
        assert_eq!(parse_memory("10mb"), Some(10 << 20));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("0"), None);
        assert_eq!(
            parse_memory("10000000000g"),
            None,
            "above what Podman takes"
        );
    }

    #[test]
    fn overlapping_paths() {
        assert!(overlaps("/root", "/root/.codex"));
        assert!(overlaps("/root/.codex/x", "/root/.codex"));
        assert!(overlaps("/", "/root/.codex"));
        assert!(!overlaps("/root/.codexx", "/root/.codex"));
    }
}
