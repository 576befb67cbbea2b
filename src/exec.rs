//! Carries out one lane's [`Step`]: the only module that changes anything
//! in Podman (create, copy, start, stop, remove), for `apply`, the daemon
//! and `down` alike.
//!
//! A new container is made in the order that keeps a crash harmless: create
//! (not started), copy the codex in while it has never started (Podman would
//! otherwise write through bind mounts onto the host), start. A container
//! whose copy failed is removed at once; one left by a crash before its start
//! is never started (the plan calls it half-made and recreates it). A start
//! refused with "address already in use" (Podman 4.3 can hand one random port
//! to two containers; `hostports` picks ports so that no other lane holds
//! one) is retried by recreating, to get a fresh port. A name
//! in use by this lane's own container that never started (a killed lanectl's
//! create) is freed; one that has started is never removed here: another
//! lanectl of the directory made it, and if it is the very container this
//! step would make, it is taken as made.

use std::io::Seek;
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::container::{Now, Observed, PublishedPort, State, short};
use crate::content::{self, ContentError};
use crate::hash::LaneHash;
use crate::hostports;
use crate::labels;
use crate::lanespec::LaneSpec;
use crate::manifest;
use crate::plan::Step;
use crate::podman::{
    self, CreateRequest, Inspected, MountRequest, Podman, PodmanError, PortRequest,
};

/// Attempts at create+start when the random host port was taken.
const PORT_RETRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Podman(#[from] PodmanError),
    #[error("codex")]
    Codex(#[from] ContentError),
    #[error("codex source {0} changed while it was being copied; the next pass retries")]
    CodexChanged(String),
    #[error("codex archive")]
    Archive(#[source] std::io::Error),
    #[error("the codex archive task ended abnormally")]
    ArchiveTask(#[source] tokio::task::JoinError),
    #[error(
        "user {0:?} is not in the image's /etc/passwd: the codex files could not be given to it"
    )]
    UnknownUser(String),
    #[error("container {0} vanished after its start")]
    Vanished(String),
    #[error(
        "container name {name} is still held by container {holder} of lane {lane} of this instance; \
         it is freed when that lane converges, and the next pass retries"
    )]
    NameHeldBySibling {
        name: String,
        holder: String,
        lane: String,
    },
    #[error(
        "container name {name} is held by container {holder} of this very lane, made by another \
         lanectl of this directory meanwhile (a daemon beside a hook?); it is left alone and the \
         next pass takes it into account"
    )]
    NameHeldByTwin { name: String, holder: String },
    #[error(
        "container name {name} is held by {holder}, not by this instance ({instance}); lanectl leaves it alone. \
         Either free the name (`podman rm -f {name}`, or `podman rename {name} NEW` to keep it) or give \
         this lane another container_name"
    )]
    NameHeldByOther {
        name: String,
        holder: String,
        instance: String,
    },
}

/// The hands that change Podman for one instance.
#[derive(Clone, Copy)]
pub struct Exec<'a> {
    pub podman: &'a Podman,
    pub instance: &'a str,
    /// Whose files may be copied in (judged as each is opened).
    pub policy: content::Policy,
    /// The lanes directory (its git commit goes on what is made).
    pub lanes_dir: &'a std::path::Path,
}

/// A step that failed, with the container the lane still has (if any).
#[derive(Debug)]
pub struct Failed {
    pub error: ExecError,
    pub left: Option<Now>,
}

impl Exec<'_> {
    /// Removes a lane's stray containers (left by a crash); one that cannot
    /// be removed is logged and left for the next pass.
    pub async fn remove_strays(&self, extras: &[Observed]) {
        for extra in extras {
            match self.podman.remove(&extra.id).await {
                Ok(()) => info!(container = %extra.name, "removed a stray container of the lane"),
                Err(e) => {
                    warn!(container = %extra.name, error = %e, "could not remove a stray container")
                }
            }
        }
    }

    /// Removes the containers of a lane whose manifest is gone, stopping at
    /// the first that cannot be removed.
    pub async fn remove(&self, containers: &[Observed]) -> Result<(), Failed> {
        for c in containers {
            self.podman.remove(&c.id).await.map_err(|e| Failed {
                error: e.into(),
                left: Some(Now::from(c)),
            })?;
            info!(container = %c.name, "removed the container of a deleted manifest");
        }
        Ok(())
    }

    /// Carries out `step`; returns the container the lane has now.
    pub async fn act(&self, spec: &LaneSpec, step: &Step) -> Result<Option<Now>, Failed> {
        let keep = |c: &Observed| {
            let left = Some(Now::from(c));
            move |e: PodmanError| Failed {
                error: e.into(),
                left,
            }
        };
        match step {
            Step::Keep(c) => Ok(c.as_ref().map(Now::from)),
            // A rollout is carried out step by step, with its probe between
            // (`reconcile::rollout`, through `make_next` and `swap`).
            Step::Roll { old, .. } => Ok(Some(Now::from(old))),
            Step::FinishRoll { next, .. } => Ok(Some(Now::from(next))),
            Step::Make { hash, replacing } => {
                if let Some(old) = replacing {
                    self.podman.remove(&old.id).await.map_err(keep(old))?;
                }
                // Stable endpoints: the new container asks for the host
                // ports the old one had.
                let before = replacing.as_ref().map_or(&[][..], |old| &old.ports[..]);
                let made = self.make(spec, hash, before, Role::Lane).await;
                made.map(Some).map_err(|error| Failed { error, left: None })
            }
            Step::Start(c) => {
                self.podman.start(&c.id).await.map_err(keep(c))?;
                Ok(Some(Now {
                    running: true,
                    ..Now::from(c)
                }))
            }
            Step::Unpause(c) => {
                self.podman.unpause(&c.id).await.map_err(keep(c))?;
                Ok(Some(Now {
                    running: true,
                    ..Now::from(c)
                }))
            }
            Step::Stop(c) => {
                if c.state == State::Paused {
                    // Podman stops no frozen container: thaw it, then stop.
                    self.podman.unpause(&c.id).await.map_err(keep(c))?;
                }
                self.podman.stop(&c.id).await.map_err(keep(c))?;
                Ok(Some(Now {
                    running: false,
                    ..Now::from(c)
                }))
            }
            Step::Remove(all) => self.remove(all).await.map(|()| None),
        }
    }

    /// Makes the lane's new container. A name in use by a container of this
    /// very lane that the list did not show (its create was still under way
    /// in Podman when a previous lanectl was killed; it never started) is
    /// replaced; Podman may not list it for a moment yet, so it is looked
    /// for a few times before the name is called foreign.
    async fn make(
        &self,
        spec: &LaneSpec,
        hash: &LaneHash,
        before: &[PublishedPort],
        role: Role,
    ) -> Result<Now, ExecError> {
        let mut request = create_request(spec, hash, self.instance);
        if role == Role::Next {
            request.name = labels::next_name(&spec.container_name);
            request.labels.insert(labels::ROLE.into(), "next".into());
        }
        // The codex's files by digest, for `plan` to name what changes.
        if let Some(codex) = &spec.codex {
            let (source, policy) = (codex.source.clone(), self.policy);
            let digests =
                tokio::task::spawn_blocking(move || content::codex_file_digests(&source, policy))
                    .await;
            if let Ok(Ok(digests)) = digests {
                request.annotations.insert(
                    labels::CODEX_FILES_ANNOTATION.into(),
                    serde_json::to_string(&digests).unwrap_or_default(),
                );
            }
        }
        // Provenance: the commit checked out when the container is made.
        let commit = crate::provenance::git_commit(self.lanes_dir);
        if let Some(commit) = &commit {
            request
                .labels
                .insert(labels::GIT_COMMIT.into(), commit.clone());
        }
        let request = &request;
        let made = |_: ()| create_and_start(self.podman, spec, hash, self.policy, before, request);
        let mut created = made(()).await;
        for _ in 0..10 {
            let Err(ExecError::Podman(PodmanError::NameInUse { name })) = &created else {
                break;
            };
            match self.podman.find_by_name(name).await {
                Ok(Some(held)) => {
                    let ours = held.labels.get(labels::INSTANCE).map(String::as_str)
                        == Some(self.instance)
                        && held.labels.get(labels::LANE).map(String::as_str)
                            == Some(spec.lane.as_str());
                    if !ours {
                        break;
                    }
                    // One that has started is never removed here: another
                    // lanectl of this directory (a daemon beside a hook) made
                    // it meanwhile. The very container this step would make
                    // is taken as made; any other is left to the next pass.
                    if held.ever_started {
                        let same = held.labels.get(labels::SPEC_HASH) == Some(&hash.full);
                        if same && held.state == State::Running {
                            info!(container = %held.name, "taken as made: another lanectl made this very container meanwhile");
                            return Ok(Now::from(&held));
                        }
                        break;
                    }
                    if self.podman.remove(&held.id).await.is_err() {
                        break;
                    }
                    info!(container = %held.name, "replaced a never-started container of this lane that the list missed");
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(300)).await,
                Err(_) => break,
            }
            created = made(()).await;
        }
        match created {
            Ok(c) => Ok(Now {
                id: c.id,
                name: c.name,
                running: c.state == State::Running,
                ports: c.ports,
                spec_hash: Some(hash.full.clone()),
                codex: hash.codex.clone(),
                git_commit: commit,
            }),
            Err(e) => Err(self.explain_name_conflict(e, &spec.lane).await),
        }
    }

    /// A start-first rollout's new container, made and started beside the
    /// lane's running one under the temporary name (`labels::next_name`).
    /// A failure leaves nothing behind (`create_and_start` removes what it
    /// made).
    pub async fn make_next(&self, spec: &LaneSpec, hash: &LaneHash) -> Result<Now, ExecError> {
        self.make(spec, hash, &[], Role::Next).await
    }

    /// The swap of a rollout whose new container is ready: the old one is
    /// stopped within its stop timeout and removed, then the new one takes
    /// the lane's container name.
    pub async fn swap(
        &self,
        next: &Now,
        old: Option<&Observed>,
        name: &str,
    ) -> Result<Now, ExecError> {
        if let Some(old) = old {
            self.podman.remove(&old.id).await?;
            info!(container = %old.name, "the old container is gone");
        }
        self.podman.rename(&next.id, name).await?;
        Ok(Now {
            name: name.to_string(),
            ..next.clone()
        })
    }

    /// Removes a rollout's new container that failed; the old one serves on.
    pub async fn discard(&self, next: &Now) {
        if let Err(e) = self.podman.remove(&next.id).await {
            warn!(container = %next.name, error = %e, "could not remove the failed new container; the next pass does");
        }
    }

    /// What making `lane`'s container named `name` would run into, as `plan`
    /// shows it: a name held by a container that the step does not free
    /// (`freed`: the ids it removes first) and that `make` would not free
    /// either (this lane's never-started one is). `None`: the name is free,
    /// or could not be looked up (then `apply` finds out).
    pub async fn name_clash(&self, name: &str, lane: &str, freed: &[&str]) -> Option<ExecError> {
        let held = self.podman.find_by_name(name).await.ok()??;
        let ours = held.labels.get(labels::INSTANCE).map(String::as_str) == Some(self.instance)
            && held.labels.get(labels::LANE).map(String::as_str) == Some(lane);
        if freed.contains(&held.id.as_str()) || (ours && !held.ever_started) {
            return None;
        }
        Some(self.name_held(name.to_string(), lane, Ok(Some(held))))
    }

    /// A name held by another container: say whose (its instance label),
    /// never touch it.
    async fn explain_name_conflict(&self, e: ExecError, lane: &str) -> ExecError {
        let ExecError::Podman(PodmanError::NameInUse { name }) = &e else {
            return e;
        };
        let name = name.clone();
        let found = self.podman.find_by_name(&name).await;
        self.name_held(name, lane, found)
    }

    /// Whose container holds `name` (as looked up), as the error a create
    /// meets: never touched, whoever it is.
    fn name_held(
        &self,
        name: String,
        lane: &str,
        found: Result<Option<Observed>, PodmanError>,
    ) -> ExecError {
        let holder = match found {
            Ok(Some(c)) => match c.labels.get(labels::INSTANCE) {
                Some(other)
                    if other == self.instance
                        && c.labels.get(labels::LANE).map(String::as_str) == Some(lane) =>
                {
                    return ExecError::NameHeldByTwin {
                        name,
                        holder: short(&c.id).to_string(),
                    };
                }
                Some(other) if other == self.instance => {
                    let lane = c.labels.get(labels::LANE).map_or("?", String::as_str);
                    return ExecError::NameHeldBySibling {
                        name,
                        holder: short(&c.id).to_string(),
                        lane: lane.to_string(),
                    };
                }
                Some(other) => format!("container {} of lanectl instance {other}", short(&c.id)),
                None => format!(
                    "container {} without a lanectl instance label",
                    short(&c.id)
                ),
            },
            Ok(None) => "a container that is gone now".to_string(),
            Err(e) => format!("a container that could not be looked up ({e})"),
        };
        ExecError::NameHeldByOther {
            name,
            holder,
            instance: self.instance.to_string(),
        }
    }
}

/// Which container of the lane is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The lane's container, under its name.
    Lane,
    /// A start-first rollout's new one, under the temporary name.
    Next,
}

/// Creates, fills and starts a new container for `spec`; returns it
/// inspected. `before`: the host ports the lane's previous container had,
/// asked for again (on the first attempt) where the spec says "any".
async fn create_and_start(
    podman: &Podman,
    spec: &LaneSpec,
    hash: &LaneHash,
    policy: content::Policy,
    before: &[PublishedPort],
    request: &CreateRequest,
) -> Result<Inspected, ExecError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let again = if attempt == 1 { before } else { &[] };
        let request = with_free_ports(request, again).await;
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
                return inspected?.ok_or_else(|| ExecError::Vanished(spec.container_name.clone()));
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

/// `request` with each "any free port" (`host_port: 0`) made a port that is
/// free now and that no other lane holds (`hostports`: Podman 4.3 breaks a
/// container's forwarding when another one configured with its port fails
/// to start). One taken meanwhile by someone else fails the start and is
/// retried with a fresh pick.
///
/// A port the lane's previous container had (`before`) is asked for first:
/// clients that cached the endpoint keep working. Podman may hold it for a
/// moment after that container is removed, so it is waited for (up to
/// [`PORT_RELEASE_WAIT`]) before a fresh one is picked.
async fn with_free_ports(request: &CreateRequest, before: &[PublishedPort]) -> CreateRequest {
    let mut request = request.clone();
    let label = |key: &str| request.labels.get(key).cloned().unwrap_or_default();
    let (instance, lane) = (label(labels::INSTANCE), label(labels::LANE));
    let mut prefer = Vec::with_capacity(request.ports.len());
    for port in &request.ports {
        prefer.push(previous_port_once_free(port, before).await);
    }
    let owner = format!("{instance}/{lane}");
    let mut ports = request.ports.clone();
    let assigned = tokio::task::spawn_blocking(move || {
        let now = hostports::now_ms();
        hostports::Ledger::of_this_user().update(now, |entries| {
            hostports::assign(
                &mut ports,
                &prefer,
                &owner,
                entries,
                now,
                hostports::free_port,
            );
        });
        ports
    })
    .await;
    match assigned {
        Ok(ports) => request.ports = ports,
        // The pick panicked: Podman picks (and a clash is retried).
        Err(e) => warn!(error = %e, "picking host ports failed; leaving them to Podman"),
    }
    request
}

/// The port `before` had for `port` (an "any port"), once it can be bound:
/// `None` when there was none or it stayed taken.
async fn previous_port_once_free(port: &PortRequest, before: &[PublishedPort]) -> Option<u16> {
    if port.host_port != 0 {
        return None;
    }
    let previous = before.iter().find(|b| {
        b.container_port == port.container_port && b.protocol == port.protocol && b.host_port != 0
    })?;
    let deadline = tokio::time::Instant::now() + PORT_RELEASE_WAIT;
    loop {
        if hostports::free_port_at(&port.host_ip, previous.host_port, &port.protocol) {
            return Some(previous.host_port);
        }
        if tokio::time::Instant::now() >= deadline {
            debug!(
                port = previous.host_port,
                "the previous host port stayed taken; picking another"
            );
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a previous host port is waited for after its container went.
const PORT_RELEASE_WAIT: Duration = Duration::from_secs(2);

/// Builds the codex tar in one pass with its fingerprint and copies it in;
/// `policy` judges each file as opened.
async fn copy_codex(
    podman: &Podman,
    id: &str,
    spec: &LaneSpec,
    hash: &LaneHash,
    policy: content::Policy,
) -> Result<(), ExecError> {
    let Some(codex) = &spec.codex else {
        return Ok(());
    };
    let (source, target) = (codex.source.clone(), codex.target.clone());
    let owner = owner_of(podman, id, spec.user.as_deref()).await?;
    // The tar goes through a temporary file and is streamed from there: a
    // large codex never sits whole in memory.
    let (fingerprint, tar) = tokio::task::spawn_blocking(move || {
        let mut tar = tempfile::tempfile().map_err(ExecError::Archive)?;
        let fingerprint = content::codex_archive(&source, &target, owner, &mut tar, policy)?;
        tar.rewind().map_err(ExecError::Archive)?;
        Ok::<_, ExecError>((fingerprint, tar))
    })
    .await
    .map_err(ExecError::ArchiveTask)??;
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
    resolve_owner(u, g, &passwd).ok_or_else(|| ExecError::UnknownUser(u.to_string()))
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

/// What a container keeps for `plan` to explain a later change: the stored
/// spec, and each tracked mount's content hash.
fn annotations(spec: &LaneSpec, hash: &LaneHash) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::from([(
        labels::SPEC_ANNOTATION.to_string(),
        crate::hash::stored_spec(spec).to_string(),
    )]);
    if !hash.tracked_parts.is_empty() {
        let parts: std::collections::BTreeMap<&str, &str> = hash
            .tracked_parts
            .iter()
            .map(|(t, h)| (t.as_str(), h.as_str()))
            .collect();
        out.insert(
            labels::TRACKED_ANNOTATION.to_string(),
            serde_json::to_string(&parts).unwrap_or_default(),
        );
    }
    out
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
    all_labels.extend(hash.labels(instance, &spec.lane));
    CreateRequest {
        name: spec.container_name.clone(),
        // The ID the hash was made with, never the tag: a tag moved since
        // the lookup would give a container of another image under this
        // hash's labels.
        image: hash.image_id.clone(),
        user: spec.user.clone(),
        entrypoint: spec.entrypoint.clone(),
        command: spec.command.clone(),
        workdir: spec.workdir.clone(),
        env,
        labels: all_labels,
        annotations: annotations(spec, hash),
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
        let spec = crate::lanespec::tests::golden_spec();
        let h = crate::hash::lane_hash(&spec, "img", Some("fp"), &[]);
        let req = create_request(&spec, &h, "inst");
        assert_eq!(req.env["INBOX_RUNTIME_CODEX_SHA"], "fp");
        assert_eq!(req.labels[labels::INSTANCE], "inst");
        assert_eq!(req.labels[labels::SPEC_HASH], h.full);
        assert_eq!(req.labels["team"], "infra");
        assert_eq!(req.stop_timeout_secs, 10);
        assert_eq!(req.nano_cpus, Some(1_500_000_000));
    }

    #[tokio::test]
    async fn any_free_port_is_made_a_port_no_other_lane_of_this_process_was_given() {
        let spec = crate::lanespec::tests::golden_spec();
        let h = crate::hash::lane_hash(&spec, "img", None, &[]);
        let mut req = create_request(&spec, &h, "inst-free-ports");
        req.ports = vec![PortRequest {
            container_port: 80,
            host_ip: "127.0.0.1".into(),
            host_port: 0,
            protocol: "tcp".into(),
        }];
        let mut ports: Vec<u16> = Vec::new();
        for i in 0..20 {
            req.labels.insert(labels::LANE.into(), format!("lane{i}"));
            ports.push(with_free_ports(&req, &[]).await.ports[0].host_port);
        }
        assert!(ports.iter().all(|p| *p != 0), "{ports:?}");
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        req.ports[0].host_port = 8080;
        assert_eq!(
            with_free_ports(&req, &[]).await.ports[0].host_port,
            8080,
            "a fixed port is kept"
        );
    }

    #[test]
    fn the_container_is_created_from_the_image_id_the_hash_names() {
        // A tag moved between the lookup and the create must not give a
        // container of another image under this hash's labels.
        let spec = crate::lanespec::tests::golden_spec();
        let id = "4f0c".repeat(16);
        let h = crate::hash::lane_hash(&spec, &id, None, &[]);
        let req = create_request(&spec, &h, "inst");
        assert_eq!(req.image, id);
        assert_eq!(req.labels[labels::IMAGE_ID], id);
    }
}
