//! A lane's status, composed once from how its reconcile ended: pure, no
//! I/O. The one-lane reconcile ([`super::lane`]) decides, acts and probes,
//! then hands the result here and writes what comes back. Also where a
//! published port is reached (the probe and the endpoint agree on it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::container::{Now, PublishedPort};
use crate::desired::Desired;
use crate::lanespec::LaneSpec;
use crate::manifest::{DesiredState, Protocol};
use crate::status::{self, Phase, Status};

/// What every status of a lane says, however it ended.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub lane: &'a str,
    pub manifest_sha256: Option<String>,
    /// What the status answers to ([`crate::hash::inputs_digest`]), once known.
    pub inputs: Option<String>,
    pub restarts: u32,
    /// The endpoint the last status named, with its container's id: a lane
    /// halted (a typo, a missing image) while that container still runs
    /// keeps it, so that clients reading the status do not lose it.
    pub last_endpoint: Option<(String, String)>,
}

/// What the probe said of a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    /// The lane has no probe: running is ready.
    Unasked,
    Ready,
    Failed(String),
}

/// How a lane's reconcile ended (or, for the pending steps, where it is).
#[derive(Debug)]
pub enum Ended<'a> {
    /// Could not go on (`invalid`: the manifest or its sources; `failed`: the
    /// image, hashing, a Podman call), keeping the container it has.
    Halted {
        phase: Phase,
        container: Option<Now>,
        message: String,
    },
    /// A crashed container waits for its restart, due at `at`.
    RestartLater {
        container: Now,
        exit_code: Option<i64>,
        at: SystemTime,
    },
    /// About to make a new container (`message`: the action); readers see
    /// the lane is changing.
    Making {
        container: Option<Now>,
        message: String,
    },
    /// The new container is being probed; readers see it already.
    Probing { now: &'a Now, spec: &'a LaneSpec },
    /// A start-first rollout failed (`message`: at which step and why): the
    /// old container serves on; `desired_hash` is the hash that failed.
    Degraded {
        old: &'a Now,
        spec: &'a LaneSpec,
        desired_hash: String,
        message: String,
    },
    /// Acted (or had nothing to do): the container the lane has now and what
    /// its probe said.
    Settled {
        now: Option<&'a Now>,
        spec: &'a LaneSpec,
        probed: Probed,
    },
}

/// The status that says how the lane ended.
pub fn compose(facts: &Facts<'_>, ended: Ended<'_>) -> Status {
    let mut st = Status::new(facts.lane, Phase::Ready);
    st.manifest_sha256.clone_from(&facts.manifest_sha256);
    st.inputs_sha256.clone_from(&facts.inputs);
    st.restarts = facts.restarts;
    match ended {
        Ended::Halted {
            phase,
            container,
            message,
        } => {
            name(&mut st, container.as_ref());
            if let Some(c) = container.as_ref().filter(|c| c.running) {
                st.endpoints = endpoints(&c.ports);
                st.endpoint = facts
                    .last_endpoint
                    .as_ref()
                    .filter(|(id, _)| *id == c.id)
                    .map(|(_, endpoint)| endpoint.clone());
            }
            st.phase = phase;
            st.message = message;
        }
        Ended::RestartLater {
            container,
            exit_code,
            at,
        } => {
            name(&mut st, Some(&container));
            let code = exit_code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
            st.phase = Phase::Failed;
            st.message = format!(
                "exited with code {code}; restart {} at {}",
                facts.restarts + 1,
                humantime::format_rfc3339_seconds(at)
            );
        }
        Ended::Making { container, message } => {
            name(&mut st, container.as_ref());
            st.phase = Phase::Pending;
            st.message = message;
        }
        Ended::Probing { now, spec } => {
            name(&mut st, Some(now));
            reachable(&mut st, spec, now);
            st.phase = Phase::Pending;
            st.message = crate::status::PROBING.into();
        }
        Ended::Degraded {
            old,
            spec,
            desired_hash,
            message,
        } => {
            name(&mut st, Some(old));
            if old.running {
                reachable(&mut st, spec, old);
            }
            st.phase = Phase::Degraded;
            st.desired_hash = Some(desired_hash);
            st.message = message;
        }
        Ended::Settled { now, spec, probed } => {
            name(&mut st, now);
            match now {
                _ if spec.state == DesiredState::Stopped => st.phase = Phase::Stopped,
                Some(now) if now.running => {
                    reachable(&mut st, spec, now);
                    if let Probed::Failed(why) = probed {
                        st.phase = Phase::Failed;
                        st.message = why;
                    }
                }
                _ => {
                    st.phase = Phase::Failed;
                    st.message = "the container is not running".into();
                }
            }
        }
    }
    st
}

/// The status of a lane whose Podman could not be reached (the daemon). A
/// Podman outage is not a lane outage: a `ready` lane stays `ready` while its
/// endpoint answers (`answers`: what its probe said now; `None`, it has no
/// probe and nothing says it stopped), and the message says since when
/// Podman is unreachable. Otherwise the lane is `failed` with the error. What
/// it knew of the container stays. `None` for a lane whose manifest is gone
/// (left as it is until Podman is back).
pub fn unreachable(
    lane: &str,
    previous: Option<Status>,
    desired: Option<&Desired>,
    error: String,
    answers: Option<bool>,
) -> Option<Status> {
    let desired = desired?;
    let since = previous
        .as_ref()
        .and_then(|p| p.message.strip_prefix(UNREACHABLE))
        .and_then(|rest| rest.split_once(": "))
        .map_or_else(status::now_rfc3339, |(since, _)| since.to_string());
    let was_ready = previous.as_ref().is_some_and(|p| p.phase == Phase::Ready);
    let edited = match (desired, previous.as_ref()) {
        (
            Desired::Valid {
                manifest_sha256, ..
            },
            Some(p),
        ) => p.manifest_sha256.as_deref() != Some(manifest_sha256.as_str()),
        _ => false,
    };
    let mut st = previous.unwrap_or_else(|| Status::new(lane, Phase::Failed));
    (st.phase, st.message) = match desired {
        Desired::Invalid { problems, .. } => (Phase::Invalid, problems_text(problems)),
        Desired::Valid { .. } if was_ready && answers != Some(false) => {
            let how = match answers {
                Some(_) => "the endpoint still answers",
                None => "the lane has no probe; its container was running",
            };
            let pending = if edited {
                "; the manifest changed: applied once Podman answers"
            } else {
                ""
            };
            (
                Phase::Ready,
                format!("{UNREACHABLE}{since}: {error}; {how}{pending}"),
            )
        }
        Desired::Valid { .. } => (Phase::Failed, format!("{UNREACHABLE}{since}: {error}")),
    };
    st.since = status::now_rfc3339();
    Some(st)
}

/// How a message about a Podman outage starts (followed by since when).
const UNREACHABLE: &str = "podman unreachable since ";

/// Every problem of an invalid manifest, as one message.
pub fn problems_text(problems: &[crate::manifest::Problem]) -> String {
    let mut text = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > PROBLEMS_SHOWN {
        let more = problems.len() - PROBLEMS_SHOWN;
        text.push_str(&format!(
            "; and {more} more (`lanectl validate` lists every one)"
        ));
    }
    text
}

/// Problems a status message names; the rest are counted.
const PROBLEMS_SHOWN: usize = 20;

fn name(st: &mut Status, container: Option<&Now>) {
    if let Some(c) = container {
        st.container = Some(c.name.clone());
        st.container_id = Some(c.id.clone());
        st.spec_hash.clone_from(&c.spec_hash);
        st.codex_fingerprint.clone_from(&c.codex);
        st.git_commit.clone_from(&c.git_commit);
    }
}

fn reachable(st: &mut Status, spec: &LaneSpec, now: &Now) {
    st.endpoints = endpoints(&now.ports);
    st.endpoint = endpoint(spec, &now.ports);
}

/// The URL of each published tcp port, `<port>/tcp` -> URL.
fn endpoints(ports: &[PublishedPort]) -> BTreeMap<String, String> {
    ports
        .iter()
        .filter(|p| p.protocol == "tcp" && p.host_port != 0)
        .map(|p| (format!("{}/tcp", p.container_port), url(p)))
        .collect()
}

/// The probe port's URL, else the first tcp port's.
fn endpoint(spec: &LaneSpec, ports: &[PublishedPort]) -> Option<String> {
    let wanted = spec.probe.as_ref().map(|p| p.port).or_else(|| {
        spec.ports
            .iter()
            .find(|p| p.protocol == Protocol::Tcp)
            .map(|p| p.container)
    })?;
    probe_addr_of(ports, wanted).map(|addr| format!("http://{addr}"))
}

fn url(p: &PublishedPort) -> String {
    format!("http://{}", reach(p))
}

/// Where a published port answers on this host: the address it is published
/// on, 127.0.0.1 when that is every IPv4 address (or unknown), `::1` when it
/// is every IPv6 address. The probe and the endpoint agree on it.
fn reach(p: &PublishedPort) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match p.host_ip.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv6() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    SocketAddr::new(ip, p.host_port)
}

/// The address to probe a container port at, when it is published over tcp.
pub fn probe_addr_of(ports: &[PublishedPort], container_port: u16) -> Option<SocketAddr> {
    ports
        .iter()
        .find(|p| p.container_port == container_port && p.protocol == "tcp" && p.host_port != 0)
        .map(reach)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_reached_at_the_address_it_is_published_on() {
        let at = |host_ip: &str| {
            let p = PublishedPort {
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: host_ip.into(),
                host_port: 41234,
            };
            (reach(&p).to_string(), url(&p))
        };
        assert_eq!(at("").0, "127.0.0.1:41234");
        assert_eq!(at("0.0.0.0").0, "127.0.0.1:41234");
        assert_eq!(at("127.0.0.2").0, "127.0.0.2:41234");
        assert_eq!(at("::").0, "[::1]:41234");
        assert_eq!(
            at("::1"),
            ("[::1]:41234".into(), "http://[::1]:41234".into())
        );
        assert_eq!(at("10.1.2.3").1, "http://10.1.2.3:41234");
    }

    fn now(running: bool) -> Now {
        Now {
            id: "c0ffee".into(),
            name: "lane-a".into(),
            running,
            ports: vec![PublishedPort {
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: String::new(),
                host_port: 40001,
            }],
            spec_hash: Some("sha256:x".into()),
            codex: None,
            git_commit: None,
        }
    }

    #[test]
    fn a_running_lane_that_answers_is_ready_at_its_endpoint() {
        let spec = crate::lanespec::tests::golden_spec();
        let facts = Facts {
            last_endpoint: None,
            lane: "a",
            manifest_sha256: Some("m".into()),
            inputs: None,
            restarts: 2,
        };
        let c = now(true);
        let mut probe_port_spec = spec.clone();
        probe_port_spec.ports[0].container = 8080; // no probe: the first tcp port's URL
        let st = compose(
            &facts,
            Ended::Settled {
                now: Some(&c),
                spec: &probe_port_spec,
                probed: Probed::Ready,
            },
        );
        assert_eq!(st.phase, Phase::Ready);
        assert_eq!(st.endpoint.as_deref(), Some("http://127.0.0.1:40001"));
        assert_eq!(st.restarts, 2);
        assert_eq!(st.container_id.as_deref(), Some("c0ffee"));
        let failed = compose(
            &facts,
            Ended::Settled {
                now: Some(&c),
                spec: &probe_port_spec,
                probed: Probed::Failed("no answer".into()),
            },
        );
        assert_eq!(
            (failed.phase, failed.message.as_str()),
            (Phase::Failed, "no answer")
        );
        let exited = now(false);
        let down = compose(
            &facts,
            Ended::Settled {
                now: Some(&exited),
                spec: &probe_port_spec,
                probed: Probed::Unasked,
            },
        );
        assert_eq!(down.phase, Phase::Failed);
        assert_eq!(
            down.endpoint, None,
            "no endpoint for a container that does not run"
        );
    }
}
