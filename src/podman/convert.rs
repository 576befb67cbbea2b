//! Conversions: podman-api's listing into the core's [`Observed`], and a
//! [`CreateRequest`] into podman-api's create body.

use podman_api::models::{ContainerMount, LinuxResources, ListContainer, PortMapping};
use podman_api::opts::ContainerCreateOpts;

use super::{CreateRequest, Relabel};
use crate::container::{Observed, PublishedPort, State};
use crate::labels::{INSTANCE as INSTANCE_LABEL, LANE as LANE_LABEL};

/// Whether a listed container carries exactly this instance (and lane)
/// label. The list calls filter on them already, but Podman reads
/// `label=KEY=` as "KEY present, any value", and some versions OR label
/// filters: checking again keeps "never touch another instance's container"
/// true whatever the filter does.
pub(super) fn belongs(c: &Observed, instance: &str, lane: Option<&str>) -> bool {
    let label = |key| c.labels.get(key).map(String::as_str);
    !instance.is_empty()
        && label(INSTANCE_LABEL) == Some(instance)
        && lane.is_none_or(|lane| label(LANE_LABEL) == Some(lane))
}

/// Whether a container has ever started, from its `StartedAt` in Unix
/// seconds, for listings and inspects alike: Podman keeps the time of the
/// first start; a container that never started shows Go's zero time
/// (-62135596800) or nothing, whatever its state is called (`created`,
/// `configured`, `initialized`).
pub(super) fn ever_started(started_at_unix: Option<i64>) -> bool {
    started_at_unix.is_some_and(|t| t > 0)
}

pub(super) fn observed(c: ListContainer) -> Observed {
    let state = State::parse(c.state.as_deref().unwrap_or_default());
    let mut ports = Vec::new();
    for p in c.ports.unwrap_or_default() {
        // A mapping with `range` n stands for n consecutive ports.
        for i in 0..p.range.unwrap_or(1).max(1) {
            ports.push(PublishedPort {
                container_port: p.container_port.unwrap_or(0).saturating_add(i),
                protocol: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                host_ip: p.host_ip.clone().unwrap_or_default(),
                host_port: p.host_port.unwrap_or(0).saturating_add(i),
            });
        }
    }
    Observed {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default(),
        labels: c.labels.unwrap_or_default().into_iter().collect(),
        ever_started: ever_started(c.started_at),
        exit_code: (state == State::Exited).then(|| c.exit_code.unwrap_or(0).into()),
        exited_at: c.exited_at.filter(|t| *t > 0 && state == State::Exited),
        state,
        ports,
    }
}

/// The create body: what PODMAN.md lists as working on Podman 4.3.
pub(super) fn create_opts(req: &CreateRequest) -> Result<ContainerCreateOpts, String> {
    let mut b = ContainerCreateOpts::builder()
        .name(&req.name)
        .image(&req.image)
        .env(&req.env)
        .labels(&req.labels)
        .annotations(&req.annotations)
        .stop_timeout(req.stop_timeout_secs);
    if let Some(user) = &req.user {
        b = b.user(user);
    }
    if let Some(entrypoint) = &req.entrypoint {
        b = b.entrypoint(entrypoint);
    }
    if let Some(command) = &req.command {
        b = b.command(command);
    }
    if let Some(workdir) = &req.workdir {
        b = b.work_dir(workdir);
    }
    let mut mounts = Vec::new();
    for m in &req.mounts {
        let source = m
            .source
            .to_str()
            .ok_or(format!("mount source {:?} is not UTF-8", m.source))?;
        let mut options = vec!["rbind", if m.read_only { "ro" } else { "rw" }];
        options.extend(match m.relabel {
            Relabel::Shared => Some("z"),
            Relabel::Private => Some("Z"),
            Relabel::None => None,
        });
        mounts.push(ContainerMount {
            destination: Some(m.target.clone()),
            source: Some(source.to_owned()),
            _type: Some("bind".into()),
            options: Some(options.into_iter().map(str::to_owned).collect()),
            uid_mappings: None,
            gid_mappings: None,
        });
    }
    let ports = req.ports.iter().map(|p| PortMapping {
        container_port: Some(p.container_port),
        host_ip: Some(p.host_ip.clone()),
        host_port: (p.host_port != 0).then_some(p.host_port),
        protocol: Some(p.protocol.clone()),
        range: None,
    });
    b = b.mounts(mounts).portmappings(ports.collect::<Vec<_>>());
    if req.memory_bytes.is_some() || req.nano_cpus.is_some() || req.pids.is_some() {
        // The models derive no Default: let serde fill the many unset fields with None.
        let cpu = req
            .nano_cpus
            .map(|n| serde_json::json!({ "quota": n / 10_000, "period": 100_000 }));
        let limits = serde_json::json!({
            "memory": req.memory_bytes.map(|limit| serde_json::json!({ "limit": limit })),
            "cpu": cpu,
            "pids": req.pids.map(|limit| serde_json::json!({ "limit": limit })),
        });
        let limits: LinuxResources = serde_json::from_value(limits).map_err(|e| e.to_string())?;
        b = b.resource_limits(limits);
    }
    Ok(b.build())
}

pub(super) fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_escape_quotes_metacharacters() {
        assert_eq!(regex_escape("lane-a.b"), r"lane-a\.b");
        assert_eq!(regex_escape("a+b(c)"), r"a\+b\(c\)");
    }

    #[test]
    fn a_listed_container_belongs_only_with_both_labels_exact() {
        let c = |labels: &[(&str, &str)]| Observed {
            id: "id".into(),
            name: "n".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: State::Running,
            ever_started: true,
            exit_code: None,
            exited_at: None,
            ports: vec![],
        };
        let ours = c(&[(INSTANCE_LABEL, "me"), (LANE_LABEL, "a")]);
        assert!(belongs(&ours, "me", Some("a")));
        assert!(belongs(&ours, "me", None));
        assert!(!belongs(&ours, "me", Some("b")));
        assert!(!belongs(&ours, "other", Some("a")));
        assert!(
            !belongs(&ours, "", Some("a")),
            "an empty instance matches nothing"
        );
        let foreign = c(&[(INSTANCE_LABEL, "other"), (LANE_LABEL, "a")]);
        assert!(!belongs(&foreign, "me", Some("a")));
        let unlabelled = c(&[(LANE_LABEL, "a")]);
        assert!(!belongs(&unlabelled, "me", Some("a")));
    }

    #[test]
    fn ever_started_reads_one_field_the_same_way_for_lists_and_inspects() {
        assert!(!ever_started(None));
        assert!(!ever_started(Some(-62_135_596_800)));
        assert!(!ever_started(Some(0)));
        assert!(ever_started(Some(1_764_000_000)));
    }

    #[test]
    fn states_map_to_our_five() {
        assert_eq!(State::parse("created"), State::Created);
        assert_eq!(State::parse("running"), State::Running);
        assert_eq!(State::parse("stopped"), State::Exited);
        assert_eq!(State::parse("paused"), State::Paused);
        assert_eq!(State::parse("stopping"), State::Other("stopping".into()));
    }
}
