//! Carries out one lane's [`Action`](crate::plan::Action): the only module
//! that changes anything in Podman.
//!
//! A new container is made in the order that keeps a crash harmless: create
//! (not started), copy the codex in while it has never started (Podman would
//! otherwise write through bind mounts onto the host), start. A container
//! whose copy failed is removed at once; one left by a crash before its start
//! is never started (the plan calls it half-made and recreates it). A start
//! refused with "address already in use" (Podman 4.3 can hand one random port
//! to two containers) is retried by recreating, to get a fresh port.

use std::io::Seek;

use tracing::{debug, warn};

use crate::hash::{self, HashError, LaneHash};
use crate::labels;
use crate::manifest;
use crate::podman::{
    self, CreateRequest, Inspected, MountRequest, Podman, PodmanError, PortRequest,
};
use crate::spec::LaneSpec;

/// Attempts at create+start when the random host port was taken.
const PORT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Podman(#[from] PodmanError),
    #[error("codex")]
    Codex(#[from] HashError),
    #[error("codex source {0} changed while it was being copied; the next pass retries")]
    CodexChanged(String),
    #[error("{0}")]
    Other(String),
}

/// Creates, fills and starts a new container for `spec`; returns it inspected.
pub async fn create_and_start(
    podman: &Podman,
    spec: &LaneSpec,
    hash: &LaneHash,
    instance: &str,
    policy: hash::Policy,
) -> Result<Inspected, ExecError> {
    let request = create_request(spec, hash, instance);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let clock = std::time::Instant::now();
        let ms = |from: std::time::Instant| {
            u64::try_from(from.elapsed().as_millis()).unwrap_or(u64::MAX)
        };
        let id = podman.create(&request).await?;
        debug!(took_ms = ms(clock), "created");
        let started = async {
            let step = std::time::Instant::now();
            copy_codex(podman, &id, spec, hash, policy).await?;
            debug!(took_ms = ms(step), "copied the codex in");
            let step = std::time::Instant::now();
            podman.start(&id).await?;
            debug!(took_ms = ms(step), "started");
            Ok::<(), ExecError>(())
        }
        .await;
        match started {
            Ok(()) => {
                let step = std::time::Instant::now();
                let inspected = podman.inspect(&id).await;
                debug!(took_ms = ms(step), total_ms = ms(clock), "inspected");
                return inspected?.ok_or_else(|| {
                    ExecError::Other(format!(
                        "container {} vanished after its start",
                        spec.container_name
                    ))
                });
            }
            Err(e) => {
                // Never leave a half-made container behind.
                if let Err(rm) = podman.remove(&id).await {
                    warn!(lane = %spec.lane, error = %rm, "could not remove a half-made container");
                }
                let retry = matches!(&e, ExecError::Podman(p) if p.is_address_in_use());
                if !retry || attempt >= PORT_RETRIES {
                    return Err(e);
                }
                debug!(lane = %spec.lane, attempt, "host port taken at start; recreating");
            }
        }
    }
}

/// Builds the codex tar in one pass with its fingerprint and copies it in;
/// `policy` judges each file as opened.
async fn copy_codex(
    podman: &Podman,
    id: &str,
    spec: &LaneSpec,
    hash: &LaneHash,
    policy: hash::Policy,
) -> Result<(), ExecError> {
    let Some(codex) = &spec.codex else {
        return Ok(());
    };
    let (source, target) = (codex.source.clone(), codex.target.clone());
    let owner = owner_of(podman, id, spec.user.as_deref()).await?;
    // The tar goes through a temporary file and is streamed from there: a
    // large codex never sits whole in memory.
    let (fingerprint, tar) = tokio::task::spawn_blocking(move || {
        let mut tar =
            tempfile::tempfile().map_err(|e| ExecError::Other(format!("codex archive: {e}")))?;
        let fingerprint = hash::codex_archive(&source, &target, owner, &mut tar, policy)?;
        tar.rewind()
            .map_err(|e| ExecError::Other(format!("codex archive: {e}")))?;
        Ok::<_, ExecError>((fingerprint, tar))
    })
    .await
    .map_err(|e| ExecError::Other(format!("codex archive task: {e}")))??;
    if hash.codex.as_deref() != Some(fingerprint.as_str()) {
        return Err(ExecError::CodexChanged(codex.source.display().to_string()));
    }
    podman.put_archive(id, tar).await?;
    Ok(())
}

/// The uid/gid the codex files get, so that the container's user can read
/// them: root for none or `root`, numbers as given, a name looked up in the
/// container's own /etc/passwd (the container has never started, so reading
/// through the archive endpoint is safe).
async fn owner_of(podman: &Podman, id: &str, user: Option<&str>) -> Result<(u64, u64), ExecError> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let passwd = if u.parse::<u64>().is_err() && u != "root" {
        let bytes = podman.read_file(id, "/etc/passwd", 1 << 20).await?;
        String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned()
    } else {
        String::new()
    };
    resolve_owner(u, g, &passwd).ok_or_else(|| {
        ExecError::Other(format!(
            "user {u:?} is not in the image's /etc/passwd: the codex files could not be given to it"
        ))
    })
}

/// `user[:group]` -> uid/gid, names looked up in `passwd` (group names are
/// not resolved: a numeric group or the user's own is used).
fn resolve_owner(user: &str, group: &str, passwd: &str) -> Option<(u64, u64)> {
    let (uid, primary) = match user.parse::<u64>() {
        Ok(uid) => (uid, uid),
        Err(_) if user == "root" => (0, 0),
        Err(_) => passwd.lines().find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(user)).then_some(())?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some((uid, gid))
        })?,
    };
    Some((uid, group.parse().unwrap_or(primary)))
}

/// The create body: the resolved spec plus lanectl's labels and the
/// fingerprint env.
pub fn create_request(spec: &LaneSpec, hash: &LaneHash, instance: &str) -> CreateRequest {
    let mut env = spec.env.clone();
    if let (Some(codex), Some(fp)) = (&spec.codex, &hash.codex)
        && let Some(name) = &codex.fingerprint_env
    {
        env.insert(name.clone(), fp.clone());
    }
    let mut all_labels = spec.labels.clone();
    all_labels.extend(labels::for_lane(instance, &spec.lane, hash));
    CreateRequest {
        name: spec.container_name.clone(),
        image: spec.image.clone(),
        user: spec.user.clone(),
        entrypoint: spec.entrypoint.clone(),
        command: spec.command.clone(),
        workdir: spec.workdir.clone(),
        env,
        labels: all_labels,
        mounts: spec
            .mounts
            .iter()
            .map(|m| MountRequest {
                source: m.source.clone(),
                target: m.target.clone(),
                read_only: m.read_only,
                relabel: match m.relabel {
                    manifest::Relabel::Shared => podman::Relabel::Shared,
                    manifest::Relabel::Private => podman::Relabel::Private,
                    manifest::Relabel::None => podman::Relabel::None,
                },
            })
            .collect(),
        ports: spec
            .ports
            .iter()
            .map(|p| PortRequest {
                container_port: p.container,
                host_ip: p.host_ip.clone(),
                host_port: p.host_port,
                protocol: p.protocol.to_string(),
            })
            .collect(),
        memory_bytes: spec
            .resources
            .memory_bytes
            .and_then(|m| i64::try_from(m).ok()),
        nano_cpus: spec.resources.cpus.map(|c| (c * 1e9).round() as u64),
        pids: spec.resources.pids.map(i64::from),
        stop_timeout_secs: spec.stop_timeout.as_secs_f64().ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_containers_user_owns_the_codex_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1001::/home/node:/bin/sh\n";
        assert_eq!(resolve_owner("root", "", passwd), Some((0, 0)));
        assert_eq!(resolve_owner("1000", "", ""), Some((1000, 1000)));
        assert_eq!(resolve_owner("1000", "100", ""), Some((1000, 100)));
        assert_eq!(resolve_owner("node", "", passwd), Some((1000, 1001)));
        assert_eq!(resolve_owner("ghost", "", passwd), None);
    }

    #[test]
    fn the_create_request_carries_labels_and_the_fingerprint_env() {
        let spec = crate::spec::tests::golden_spec();
        let h = hash::lane_hash(&spec, "img", Some("fp"), &[]);
        let req = create_request(&spec, &h, "inst");
        assert_eq!(req.env["INBOX_RUNTIME_CODEX_SHA"], "fp");
        assert_eq!(req.labels[labels::INSTANCE], "inst");
        assert_eq!(req.labels[labels::SPEC_HASH], h.full);
        assert_eq!(req.labels["team"], "infra");
        assert_eq!(req.stop_timeout_secs, 10);
        assert_eq!(req.nano_cpus, Some(1_500_000_000));
    }
}
