//! `resolve`: one manifest, checked section by section into a [`LaneSpec`],
//! with every problem found at once.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::paths::{SourceKind, absolute, normalize_target, overlaps, source_kind};
use super::types::{
    Codex, DEFAULT_DRAIN, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_TIMEOUT, DEFAULT_STOP_TIMEOUT,
    LaneSpec, MIN_PROBE_INTERVAL, Mount, Port, Probe, Resources, Update,
};
use crate::labels;
use crate::manifest::{
    DurationText, Loaded, Problem, Protocol, RawCodex, RawMount, RawPort, RawProbe, RawResources,
    RawUpdate, Seg, UpdateOrder, Words,
};

/// Resolves a loaded manifest; `dir` is the manifest's directory. Every
/// field is checked (one function per section, in the manifest's order), so
/// that one look at the lane shows every problem at once: the loading's
/// own problems first, then what the values show of the part that typed.
pub fn resolve(lane: &str, loaded: &Loaded, dir: &Path) -> Result<LaneSpec, Vec<Problem>> {
    resolve_for(lane, loaded, dir, MountsOn::ThisMachine)
}

/// Where a lane's bind-mount sources are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MountsOn {
    /// Here: each must exist (as a file or directory) to be mounted.
    #[default]
    ThisMachine,
    /// On the nodes a render is for: one missing here is no problem.
    Nodes,
}

/// [`resolve`], with the mount sources where `mounts` says.
pub fn resolve_for(
    lane: &str,
    loaded: &Loaded,
    dir: &Path,
    mounts: MountsOn,
) -> Result<LaneSpec, Vec<Problem>> {
    let raw = &loaded.raw;
    let mut c = Checker {
        loaded,
        dir,
        mounts_on: mounts,
        problems: loaded.problems.clone(),
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
    let update = c.update(raw.update.as_ref(), &ports, probe.as_ref());
    c.host(raw.host.as_deref());
    // Names are reported after every other problem.
    c.names("env", "env", &env);
    c.names("labels", "label", &user_labels);

    if !c.problems.is_empty() {
        // In the file's order, as a compiler says them (stable: problems at
        // one place keep the order they were found in).
        Problem::sort_by_position(&mut c.problems);
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
        update,
        host: raw.host.clone(),
    })
}

/// The container name a lane asks for: its own, or `lane-<lane>`.
pub fn container_name(lane: &str, given: Option<&str>) -> String {
    given.map_or_else(|| format!("lane-{lane}"), str::to_string)
}

/// One manifest being checked: where it is, and every problem found so far.
struct Checker<'a> {
    loaded: &'a Loaded,
    dir: &'a Path,
    mounts_on: MountsOn,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn bad(&mut self, path: &[Seg], msg: String) {
        self.problems.push(self.loaded.problem(path, msg));
    }

    /// Whether something of the top-level `key` did not type (and was
    /// reported): a check that would read its absence as meaning is skipped.
    fn partial(&self, key: &str) -> bool {
        self.loaded.partial.contains(key)
    }

    fn image(&mut self, image: Option<&str>) -> String {
        match image.map(str::trim) {
            Some(i) if !i.is_empty() => i.to_string(),
            _ if self.partial("image") => String::new(),
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
        let name = container_name(lane, name);
        if !valid_container_name(&name) {
            self.bad(
                &[Seg::Key("container_name")],
                format!("container name {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
            );
        }
        name
    }

    fn host(&mut self, host: Option<&str>) {
        if let Some(Err(why)) = host.map(super::check_host) {
            self.bad(&[Seg::Key("host")], why);
        }
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
                Err(_) if self.mounts_on == MountsOn::Nodes && !source.exists() => {}
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
                written: m.source.clone(),
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
        if !published && !self.partial("ports") && !self.partial("probe") {
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

    /// start-first runs two containers of the lane at once and trusts the
    /// new one only once its probe answers: a fixed host port could not be
    /// bound twice, and without a probe nothing could tell it is good.
    fn update(&mut self, raw: Option<&RawUpdate>, ports: &[Port], probe: Option<&Probe>) -> Update {
        let Some(raw) = raw else {
            return Update::default();
        };
        let at = |k| [Seg::Key("update"), Seg::Key(k)];
        let update = Update {
            order: raw.order.unwrap_or_default(),
            drain: self.duration(&at("drain"), raw.drain.as_ref(), DEFAULT_DRAIN),
        };
        if update.order != UpdateOrder::StartFirst {
            return update;
        }
        for (i, p) in ports.iter().enumerate().filter(|(_, p)| p.host_port != 0) {
            self.bad(
                &[Seg::Key("ports"), Seg::Index(i), Seg::Key("host_port")],
                format!(
                    "update.order start-first runs the old and the new container at once, and \
                     host port {} cannot be bound by both: use host_port 0 (the status file \
                     names the port) or stop-first",
                    p.host_port
                ),
            );
        }
        if probe.is_none() && !self.partial("ports") && !self.partial("probe") {
            self.bad(
                &at("order"),
                "update.order start-first needs a probe to tell the new container is good: \
                 publish a tcp port (it is probed) or use stop-first"
                    .into(),
            );
        }
        update
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
mod tests {
    use super::*;

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
}
