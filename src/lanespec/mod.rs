//! `RawManifest` -> `LaneSpec`: defaults applied, paths resolved, every rule
//! of SPEC.md's "Manifest" section checked, and every problem returned.
//!
//! What the files alone show is decided here (an `invalid` lane); what needs
//! Podman (a missing image, a name held by someone else) is not. Cross-lane
//! rules (two lanes with one container name) live in [`check_across`].

use std::collections::{BTreeMap, HashMap};

use crate::manifest::{Problem, Protocol};

mod paths;
mod resolve;
mod types;

pub use paths::{absolute, overlaps};
pub use resolve::{MountsOn, container_name, resolve, resolve_for};
pub use types::{Codex, DEFAULT_STOP_TIMEOUT, LaneSpec, Mount, Port, Probe, Resources, Update};

/// A lane's `host` (and `--host`): a hostname, as DNS has it (labels of
/// letters, digits and `-`, joined by `.`), which is also what Kubernetes
/// accepts as a node name.
pub fn check_host(name: &str) -> Result<(), String> {
    if name.len() > 253 || !name.split('.').all(|l| is_dns_label(l, false)) {
        let shown: String = name.chars().take(64).collect();
        return Err(format!(
            "host {shown:?} is not a hostname: labels of letters, digits and '-' \
             (not first or last), joined by '.'"
        ));
    }
    Ok(())
}

/// One DNS label (RFC 1123): 1 to 63 letters, digits and `-`, not first or
/// last; letters only lowercase when `lowercase` (as Kubernetes wants them).
pub fn is_dns_label(label: &str, lowercase: bool) -> bool {
    let letter = |b: u8| b.is_ascii_lowercase() || (!lowercase && b.is_ascii_uppercase());
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| letter(b) || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Whether a lane's `host` names this host: hostnames compare without case.
pub fn is_this_host(lane_host: &str, this_host: &str) -> bool {
    lane_host.eq_ignore_ascii_case(this_host)
}

/// Cross-lane rule: two lanes with one container name. The lane that
/// `holds` it (its container has the name now) keeps it and only the others
/// are invalid; when none holds it, all are.
/// `names`: lane -> (its container name, a problem placed where the name
/// stands), for every lane whose manifest loaded, valid or not.
pub fn check_across(
    names: &BTreeMap<String, (String, Problem)>,
    holds: impl Fn(&str, &str) -> bool,
) -> HashMap<String, Problem> {
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    for (lane, (container, _)) in names {
        by_name.entry(container).or_default().push(lane);
    }
    let mut out = HashMap::new();
    for (name, lanes) in by_name.into_iter().filter(|(_, l)| l.len() > 1) {
        let holder = lanes.iter().find(|lane| holds(lane, name));
        for lane in &lanes {
            let mut problem = names[*lane].1.clone();
            problem.message = match holder {
                Some(holder) if holder == lane => continue,
                Some(holder) => format!(
                    "container name {name} is held by lane {holder}, whose container has it: \
                     give this lane another container_name"
                ),
                None => format!(
                    "container name {name} is also used by lane {}",
                    others(&lanes, lane)
                ),
            };
            out.insert(lane.to_string(), problem);
        }
    }
    out
}

/// The lanes of a clash but `lane`, for a message.
fn others(lanes: &[&str], lane: &str) -> String {
    let others: Vec<&str> = lanes.iter().copied().filter(|l| *l != lane).collect();
    others.join(", ")
}

/// A fixed host port one lane publishes: (lane, (host ip, port, protocol),
/// a problem placed where the port stands).
pub type FixedPort = (String, (String, u16, Protocol), Problem);

/// Cross-lane rule: two lanes publishing one fixed host port (on the same
/// address, or one of them on every address): only one of them could ever
/// start. The lane that `holds` it (its running container publishes it)
/// keeps it and only the others are invalid; when none holds it, all are.
pub fn check_ports_across(
    fixed: &[FixedPort],
    holds: impl Fn(&str, u16, Protocol) -> bool,
) -> Vec<(String, Problem)> {
    let every = |ip: &str| ip == "0.0.0.0" || ip == "::";
    let overlap = |a: &str, b: &str| a == b || every(a) || every(b);
    let mut out = Vec::new();
    for (lane, (ip, port, protocol), at) in fixed {
        let others: Vec<&str> = fixed
            .iter()
            .filter(|(other, (oip, oport, oprotocol), _)| {
                other != lane && oport == port && oprotocol == protocol && overlap(ip, oip)
            })
            .map(|(other, _, _)| other.as_str())
            .collect();
        if others.is_empty() || holds(lane, *port, *protocol) {
            continue;
        }
        let mut problem = at.clone();
        problem.message = match others.iter().find(|o| holds(o, *port, *protocol)) {
            Some(holder) => format!(
                "host port {port}/{protocol} on {ip} is held by lane {holder}, whose running \
                 container publishes it: give this lane another host_port"
            ),
            None => format!(
                "host port {port}/{protocol} on {ip} is also published by lane {}",
                others.join(", ")
            ),
        };
        out.push((lane.clone(), problem));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::paths::{SourceKind, source_kind};
    use super::*;
    use crate::manifest::{DesiredState, Protocol, Relabel};
    use crate::manifest::{load, read_source};
    use std::path::{Path, PathBuf};
    use std::time::Duration;

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
                written: "../worktrees/alpha".into(),
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
            update: Update::default(),
            host: Some("web-1".into()),
        }
    }

    #[test]
    fn state_probe_stop_timeout_update_and_host_are_not_in_the_hash() {
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
        b.update = Update {
            order: crate::manifest::UpdateOrder::StartFirst,
            drain: Duration::from_secs(9),
        };
        b.host = Some("web-2".into());
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
    #[test]
    fn start_first_needs_a_probe_and_no_fixed_host_port() {
        let fixed = problems_of(
            "image: i\nports: [{container: 80, host_port: 18080}]\nupdate: {order: start-first}\n",
        );
        assert_eq!(fixed.len(), 1, "{fixed:?}");
        assert_eq!(fixed[0].pos.as_ref().unwrap().line, 2, "{fixed:?}");
        assert!(
            fixed[0]
                .message
                .contains("host port 18080 cannot be bound by both")
        );
        let blind = problems_of("image: i\nupdate: {order: start-first, drain: 1s}\n");
        assert_eq!(blind.len(), 1, "{blind:?}");
        assert!(blind[0].message.contains("needs a probe"), "{blind:?}");
        let bad = problems_of("image: i\nupdate: {order: rolling, drain: soon}\n");
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

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
}
