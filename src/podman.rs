//! The adapter between lanectl and Podman's REST API, spoken only through the
//! `podman-api` crate. It owns the connection (resolving the socket URL and, when
//! nothing answers at the default, a private `podman system service` that lives as long
//! as the [`Podman`] value) and a handful of typed operations on containers and images.
//! podman-api's all-`Option` models never leave this module: callers see the small types
//! below, and HTTP statuses are mapped once, here: 404 to absent or [`PodmanError::NotFound`],
//! 304 to "already so", a name conflict to [`PodmanError::NameInUse`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podman_api::models::{ContainerMount, LinuxResources, ListContainer, PortMapping};
use podman_api::opts::{
    ContainerCreateOpts, ContainerDeleteOpts, ContainerListFilter, ContainerListOpts,
    ContainerStopOpts,
};

use crate::container::{ContainerEvent, Observed, PublishedPort, State, StreamItem};
use crate::labels::{INSTANCE as INSTANCE_LABEL, LANE as LANE_LABEL};
/// Longest wait for an ordinary call: a hung Podman (a storage lock, say)
/// must not hold a lane's worker for ever.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Stop and remove wait for the container's own stop timeout first.
const STOP_TIMEOUT: Duration = Duration::from_secs(900);
/// A large codex takes a while to copy.
const COPY_TIMEOUT: Duration = Duration::from_secs(900);

/// How long a `_ping` may take before Podman counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a private service may take to answer its first `_ping`.
const SERVICE_STARTUP: Duration = Duration::from_secs(10);

/// Something Podman could not do, naming the call and the container or image.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("cannot reach podman at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("container name {name} is already in use")]
    NameInUse { name: String },
    #[error("podman {call}: {message}")]
    Api { call: String, message: String },
}

impl PodmanError {
    fn api(call: String, message: impl Into<String>) -> PodmanError {
        let message = message.into();
        PodmanError::Api { call, message }
    }

    /// A start that failed because the published host port is taken (a random port
    /// handed out twice): retryable by recreating the container.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Self::Api { message, .. } if message.contains("address already in use"))
    }
}

/// One container as inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    pub name: String,
    pub state: State,
    /// Started at least once (Podman keeps a start time from then on).
    pub ever_started: bool,
    pub ports: Vec<PublishedPort>,
}

/// SELinux relabelling of a bind mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relabel {
    /// `z`: shared between containers.
    Shared,
    /// `Z`: private to this container.
    Private,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    pub relabel: Relabel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub container_port: u16,
    pub host_ip: String,
    /// 0: Podman picks a free port at create time.
    pub host_port: u16,
    pub protocol: String,
}

/// Everything lanectl sets on a container it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub image: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<MountRequest>,
    pub ports: Vec<PortRequest>,
    pub memory_bytes: Option<i64>,
    /// CPUs × 10⁹; sent as a CFS quota over a 100 ms period.
    pub nano_cpus: Option<u64>,
    pub pids: Option<i64>,
    pub stop_timeout_secs: u64,
}

/// A connection to Podman, possibly to a private service owned by this value.
pub struct Podman {
    api: podman_api::Podman,
    url: String,
    /// Held for its Drop only.
    _service: Option<PrivateService>,
}

impl Podman {
    /// Resolves the URL (`explicit` > `$CONTAINER_HOST` > the per-user default) and pings
    /// it. Only when neither an explicit URL nor `$CONTAINER_HOST` was given, nothing
    /// answers, a `podman` binary exists and we do not run as a systemd unit, starts
    /// `podman system service` on a private socket for as long as the value lives.
    pub async fn connect(explicit: Option<&str>) -> Result<Podman, PodmanError> {
        let host = std::env::var("CONTAINER_HOST")
            .ok()
            .filter(|h| !h.is_empty());
        let given = explicit.map(str::to_owned).or(host);
        let url = given.clone().unwrap_or_else(default_url);
        let (api, service) = (client(&url)?, None);
        let Err(reason) = ping(&api).await else {
            return Ok(Podman {
                api,
                url,
                _service: service,
            });
        };
        if given.is_some() {
            return Err(PodmanError::Unreachable { url, reason });
        }
        if std::env::var_os("INVOCATION_ID").is_some() {
            // A service started inside lanectl's unit dies with it on `systemctl stop`,
            // and with it every lane: use the system's podman.socket instead.
            let reason = format!("{reason} (under systemd: enable podman.socket)");
            return Err(PodmanError::Unreachable { url, reason });
        }
        let spawned = PrivateService::spawn().map_err(|e| PodmanError::Unreachable {
            url: url.clone(),
            reason: format!("{reason}; starting a private podman service: {e}"),
        })?;
        let url = format!("unix://{}", spawned.socket.display());
        let api = client(&url)?;
        spawned.wait_ready(&api, &url).await?;
        tracing::info!(url = %url, "started a private podman service");
        let service = Some(spawned);
        Ok(Podman {
            api,
            url,
            _service: service,
        })
    }

    /// Whether Podman answers now.
    pub async fn ping(&self) -> Result<(), PodmanError> {
        ping(&self.api)
            .await
            .map_err(|reason| PodmanError::Unreachable {
                url: self.url.clone(),
                reason,
            })
    }

    /// The URL this connection talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every container (running or not) carrying `io.lanectl.instance=<instance>`.
    pub async fn list_instance(&self, instance: &str) -> Result<Vec<Observed>, PodmanError> {
        let filter = ContainerListFilter::LabelKeyVal(INSTANCE_LABEL.into(), instance.into());
        let call = || format!("list containers of instance {instance}");
        let found = self.list(filter, call).await?;
        Ok(found
            .into_iter()
            .filter(|c| belongs(c, instance, None))
            .collect())
    }

    /// The containers of one lane of one instance (both labels must match).
    pub async fn list_lane(
        &self,
        instance: &str,
        lane: &str,
    ) -> Result<Vec<Observed>, PodmanError> {
        let filters = [
            ContainerListFilter::LabelKeyVal(INSTANCE_LABEL.into(), instance.into()),
            ContainerListFilter::LabelKeyVal(LANE_LABEL.into(), lane.into()),
        ];
        let opts = ContainerListOpts::builder()
            .all(true)
            .filter(filters)
            .build();
        let list = bounded(CALL_TIMEOUT, self.api.containers().list(&opts)).await;
        let call = || format!("list containers of lane {lane}");
        let found = list
            .map_err(|e| api_error(call(), e))?
            .into_iter()
            .map(observed);
        Ok(found.filter(|c| belongs(c, instance, Some(lane))).collect())
    }

    /// Container events of this instance's containers, as they happen, from
    /// `since` on when given (Podman replays the ones already logged). The
    /// stream first yields [`StreamItem::Connected`] once Podman has answered
    /// the request (not before: events before that moment may be missed),
    /// then the events. The channel closes when the stream ends (Podman
    /// restarted, socket gone) or fails; the caller reconnects.
    pub fn events(
        &self,
        instance: &str,
        since: Option<std::time::SystemTime>,
    ) -> tokio::sync::mpsc::Receiver<StreamItem> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let url = self.url.clone();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            if let Err(e) = follow_events(&url, &instance, since, &tx).await {
                let _ = tx.send(StreamItem::Failed(e.to_string())).await;
            }
        });
        rx
    }

    /// The container holding exactly this name, whoever owns it.
    pub async fn find_by_name(&self, name: &str) -> Result<Option<Observed>, PodmanError> {
        // Podman matches the name filter as an unanchored regular expression.
        let filter = ContainerListFilter::Name(format!("^{}$", regex_escape(name)));
        let found = self
            .list(filter, || format!("find container {name}"))
            .await?;
        Ok(found.into_iter().find(|c| c.name == name))
    }

    /// The local image ID (hex, no `sha256:`) of a reference; `None` when absent. Never pulls.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, PodmanError> {
        let call = || format!("inspect image {reference}");
        // The reference becomes part of the URL path: keep it from adding a query.
        if reference.is_empty() || reference.contains(['?', '#', '%', ' ']) {
            return Err(PodmanError::api(call(), "not a valid image reference"));
        }
        match bounded(CALL_TIMEOUT, self.api.images().get(reference).inspect()).await {
            Ok(image) => {
                let id = image.id.unwrap_or_default();
                Ok(Some(id.strip_prefix("sha256:").unwrap_or(&id).to_owned()))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(api_error(call(), e)),
        }
    }

    /// Creates (does not start) a container; returns its ID.
    pub async fn create(&self, req: &CreateRequest) -> Result<String, PodmanError> {
        let call = || format!("create container {}", req.name);
        let opts = create_opts(req).map_err(|message| PodmanError::api(call(), message))?;
        let e = match bounded(CALL_TIMEOUT, self.api.containers().create(&opts)).await {
            Ok(created) => return Ok(created.id),
            Err(e) => e,
        };
        let message = fault_message(&e);
        // Podman 4.3 answers 500 for both, not 409 and 404.
        Err(
            if status(&e) == Some(409) || message.contains("name is already in use") {
                PodmanError::NameInUse {
                    name: req.name.clone(),
                }
            } else if status(&e) == Some(404) || message.contains("image not known") {
                PodmanError::NotFound {
                    what: format!("image {}", req.image),
                }
            } else {
                PodmanError::api(call(), message)
            },
        )
    }

    /// Unpacks a tar at `/` of a container that has never started. Into a started one
    /// Podman would write through its bind mounts onto the host, so that is refused.
    pub async fn put_archive(&self, id: &str, tar: std::fs::File) -> Result<(), PodmanError> {
        let call = || format!("copy into container {}", short(id));
        match self.inspect(id).await? {
            None => return Err(not_found(id)),
            Some(c) if c.ever_started || c.state != State::Created => {
                let message = "refusing: the container has already started";
                return Err(PodmanError::api(call(), message));
            }
            Some(_) => {}
        }
        // Streamed from the file: a large codex never sits whole in memory.
        let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(tar));
        let body = hyper::Body::wrap_stream(stream);
        let answer = bounded(
            COPY_TIMEOUT,
            self.api.containers().get(id).copy_to("/", body),
        )
        .await;
        settle(answer, Err(not_found(id)), call)
    }

    /// The bytes of one regular file of a container (at most `limit` bytes of
    /// archive), read through the archive endpoint; `None` when absent.
    pub async fn read_file(
        &self,
        id: &str,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, PodmanError> {
        use futures_util::StreamExt;
        let call = || format!("read {path} of container {}", short(id));
        let container = self.api.containers().get(id);
        let read = async {
            let mut stream = Box::pin(container.copy_from(path));
            let mut archive = Vec::new();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(bytes) => archive.extend_from_slice(&bytes),
                    Err(e) if status(&e) == Some(404) => return Ok(None),
                    Err(e) => return Err(api_error(call(), e)),
                }
                if archive.len() > limit {
                    return Err(PodmanError::api(call(), "larger than expected"));
                }
            }
            Ok(Some(archive))
        };
        // Bounded like every call: a hung Podman must not hold the lane.
        let archive = match tokio::time::timeout(CALL_TIMEOUT, read).await {
            Ok(Ok(Some(archive))) => archive,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let message = format!(
                    "no answer within {}",
                    humantime::format_duration(CALL_TIMEOUT)
                );
                return Err(PodmanError::api(call(), message));
            }
        };
        let mut tar = tar::Archive::new(archive.as_slice());
        let entries = tar
            .entries()
            .map_err(|e| PodmanError::api(call(), e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| PodmanError::api(call(), e.to_string()))?;
            if entry.header().entry_type().is_file() {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut bytes)
                    .map_err(|e| PodmanError::api(call(), e.to_string()))?;
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }

    /// Starts a container; one already running is fine.
    pub async fn start(&self, id: &str) -> Result<(), PodmanError> {
        let answer = bounded(CALL_TIMEOUT, self.api.containers().get(id).start(None)).await;
        settle(answer, Err(not_found(id)), || {
            format!("start container {}", short(id))
        })
    }

    /// Stops a container within its own stop timeout; one already stopped is fine.
    pub async fn stop(&self, id: &str) -> Result<(), PodmanError> {
        let opts = ContainerStopOpts::default();
        let answer = bounded(STOP_TIMEOUT, self.api.containers().get(id).stop(&opts)).await;
        settle(answer, Err(not_found(id)), || {
            format!("stop container {}", short(id))
        })
    }

    /// Removes a container, first stopping it within its own stop timeout; one already
    /// gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), PodmanError> {
        let opts = ContainerDeleteOpts::builder().force(true).build();
        let answer = bounded(STOP_TIMEOUT, self.api.containers().get(id).delete(&opts)).await;
        settle(answer, Ok(()), || format!("remove container {}", short(id)))
    }

    /// Inspects a container; `None` when it does not exist. Published ports are known
    /// from create on, before the first start.
    pub async fn inspect(&self, id: &str) -> Result<Option<Inspected>, PodmanError> {
        let data = match bounded(CALL_TIMEOUT, self.api.containers().get(id).inspect()).await {
            Ok(data) => data,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(api_error(format!("inspect container {}", short(id)), e)),
        };
        let mut ports = Vec::new();
        let bindings = data
            .network_settings
            .and_then(|n| n.ports)
            .unwrap_or_default();
        for (key, hosts) in bindings {
            let (port, protocol) = key.split_once('/').unwrap_or((&key, "tcp"));
            let Ok(container_port) = port.parse() else {
                continue;
            };
            for host in hosts.unwrap_or_default() {
                ports.push(PublishedPort {
                    container_port,
                    protocol: protocol.to_owned(),
                    host_ip: host.host_ip.unwrap_or_default(),
                    host_port: host.host_port.and_then(|p| p.parse().ok()).unwrap_or(0),
                });
            }
        }
        ports.sort_by(|a, b| (a.container_port, &a.protocol).cmp(&(b.container_port, &b.protocol)));
        let (status, started_at) = data
            .state
            .map_or((None, None), |s| (s.status, s.started_at));
        Ok(Some(Inspected {
            id: data.id.unwrap_or_default(),
            name: data.name.unwrap_or_default(),
            state: State::parse(&status.unwrap_or_default()),
            ever_started: ever_started(started_at.map(|t| t.timestamp())),
            ports,
        }))
    }

    async fn list(
        &self,
        filter: ContainerListFilter,
        call: impl Fn() -> String,
    ) -> Result<Vec<Observed>, PodmanError> {
        let opts = ContainerListOpts::builder()
            .all(true)
            .filter([filter])
            .build();
        let list = bounded(CALL_TIMEOUT, self.api.containers().list(&opts)).await;
        Ok(list
            .map_err(|e| api_error(call(), e))?
            .into_iter()
            .map(observed)
            .collect())
    }
}

/// Whether a listed container carries exactly this instance (and lane)
/// label. The list calls filter on them already, but Podman reads
/// `label=KEY=` as "KEY present, any value", and some versions OR label
/// filters: checking again keeps "never touch another instance's container"
/// true whatever the filter does.
fn belongs(c: &Observed, instance: &str, lane: Option<&str>) -> bool {
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
fn ever_started(started_at_unix: Option<i64>) -> bool {
    started_at_unix.is_some_and(|t| t > 0)
}

fn observed(c: ListContainer) -> Observed {
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
        state,
        ports,
    }
}

/// Longest wait for Podman to answer an events request with its headers.
const EVENTS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An event line longer than this is not Podman's.
const MAX_EVENT_LINE: usize = 1 << 20;

/// Follows `GET /events` over hyper directly (podman-api's stream does not
/// say when Podman has answered): `Connected` after the response headers,
/// then one event per JSON line.
async fn follow_events(
    url: &str,
    instance: &str,
    since: Option<std::time::SystemTime>,
    tx: &tokio::sync::mpsc::Sender<StreamItem>,
) -> Result<(), PodmanError> {
    use hyper::body::HttpBody;
    let call = || "follow events".to_string();
    let filters = serde_json::json!({
        "type": ["container"],
        "label": [format!("{INSTANCE_LABEL}={instance}")],
    });
    let mut query = format!(
        "stream=true&filters={}",
        percent_encode(&filters.to_string())
    );
    if let Some(since) = since {
        let since = humantime::format_rfc3339_nanos(since).to_string();
        query.push_str(&format!("&since={}", percent_encode(&since)));
    }
    let path = format!("/v4.0.0/libpod/events?{query}");
    let response = match tokio::time::timeout(EVENTS_CONNECT_TIMEOUT, http_get(url, &path)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(PodmanError::api(call(), e)),
        Err(_) => {
            let message = format!("no answer within {EVENTS_CONNECT_TIMEOUT:?}");
            return Err(PodmanError::api(call(), message));
        }
    };
    if response.status() != hyper::StatusCode::OK {
        let message = format!("answered {}", response.status());
        return Err(PodmanError::api(call(), message));
    }
    if tx.send(StreamItem::Connected).await.is_err() {
        return Ok(());
    }
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // The follower gone (it renews the stream, or shuts down): end now,
        // not at the next event, which may never come.
        let chunk = tokio::select! {
            () = tx.closed() => return Ok(()),
            chunk = body.data() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| PodmanError::api(call(), e.to_string()))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(event) = parse_event(&line, instance) else {
                continue;
            };
            if tx.send(StreamItem::Event(event)).await.is_err() {
                return Ok(());
            }
        }
        if pending.len() > MAX_EVENT_LINE {
            return Err(PodmanError::api(call(), "an event line is too long"));
        }
    }
    Ok(())
}

/// One line of the event stream, if it is an event of this instance.
fn parse_event(line: &[u8], instance: &str) -> Option<ContainerEvent> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let e: podman_api::models::Event = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => {
            // Not the error's text: it can quote a label value.
            tracing::debug!(
                bytes = line.len(),
                column = e.column(),
                "skipping an event line that does not parse"
            );
            return None;
        }
    };
    // Another instance's event (the filter is a hint): not ours.
    if e.actor.attributes.get(INSTANCE_LABEL).map(String::as_str) != Some(instance) {
        return None;
    }
    Some(ContainerEvent {
        lane: e.actor.attributes.get(LANE_LABEL).cloned(),
        action: e.action,
        id: e.actor.id,
        time: e.time_nano.into(),
    })
}

/// A GET on Podman's API outside podman-api (for the event stream).
async fn http_get(url: &str, path: &str) -> Result<hyper::Response<hyper::Body>, String> {
    let answer = if let Some(socket) = url.strip_prefix("unix://") {
        let client = hyper::Client::builder().build::<_, hyper::Body>(hyperlocal::UnixConnector);
        client.get(hyperlocal::Uri::new(socket, path).into()).await
    } else {
        let host = url
            .strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("cannot follow events at {url}: not a unix:// or tcp:// URL"))?;
        let uri = format!("http://{host}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        hyper::Client::new().get(uri).await
    };
    answer.map_err(|e| e.to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The create body: what PODMAN.md lists as working on Podman 4.3.
fn create_opts(req: &CreateRequest) -> Result<ContainerCreateOpts, String> {
    let mut b = ContainerCreateOpts::builder()
        .name(&req.name)
        .image(&req.image)
        .env(&req.env)
        .labels(&req.labels)
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

/// `explicit` and `$CONTAINER_HOST` aside: root's system socket, else the user's.
fn default_url() -> String {
    use std::os::unix::fs::MetadataExt;
    // No libc here: /proc/self belongs to the process's effective user.
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0);
    if uid == 0 {
        return "unix:///run/podman/podman.sock".into();
    }
    let runtime = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| format!("/run/user/{uid}"));
    format!("unix://{runtime}/podman/podman.sock")
}

fn client(url: &str) -> Result<podman_api::Podman, PodmanError> {
    podman_api::Podman::new(url).map_err(|e| PodmanError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

async fn ping(api: &podman_api::Podman) -> Result<(), String> {
    match tokio::time::timeout(PING_TIMEOUT, api.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer to _ping within {PING_TIMEOUT:?}")),
    }
}

/// A `podman system service` child on a socket in a private temporary directory;
/// killed, reaped and removed on drop. Lanes outlive it: their conmon processes
/// are not its children.
struct PrivateService {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl PrivateService {
    fn spawn() -> std::io::Result<PrivateService> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new()
            .prefix("lanectl-podman-")
            .tempdir()?;
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log"))?;
        let mut command = Command::new("podman");
        command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C at the terminal must not kill Podman
            // under a lanectl that is still finishing a write.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe, which is all that pre_exec
        // asks of the closure. With it the service dies with lanectl however
        // lanectl ends (a signal, a crash), not only through Drop.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        Ok(PrivateService { child, socket, dir })
    }

    async fn wait_ready(&self, api: &podman_api::Podman, url: &str) -> Result<(), PodmanError> {
        let deadline = Instant::now() + SERVICE_STARTUP;
        loop {
            let reason = match ping(api).await {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            let log =
                std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or(&reason).to_owned();
            if Instant::now() >= deadline {
                let reason = format!(
                    "private podman service did not answer within {SERVICE_STARTUP:?}: {last}"
                );
                return Err(PodmanError::Unreachable {
                    url: url.to_owned(),
                    reason,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateService {
    fn drop(&mut self) {
        // SIGKILL, then reap; errors mean it is already gone. TempDir removes the socket.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A podman-api call that gives up after `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = podman_api::Result<T>>,
) -> podman_api::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(podman_api::Error::IO(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(limit)),
        ))),
    }
}

fn status(e: &podman_api::Error) -> Option<u16> {
    match e {
        podman_api::Error::Fault { code, .. } => Some(code.as_u16()),
        _ => None,
    }
}

/// Podman's error text. podman-api renders it as "message: cause", and Podman's message
/// usually ends with the cause already: drop the repetition.
fn fault_message(e: &podman_api::Error) -> String {
    match e {
        podman_api::Error::Fault { message, .. } => tidy(message),
        other => other.to_string(),
    }
}

fn tidy(text: &str) -> String {
    let text = elide_dumps(text);
    // The longest tail that the text before it already ends with is the repeated cause.
    let repeated = text.match_indices(": ").find_map(|(i, _)| {
        let (head, tail) = (&text[..i], &text[i + 2..]);
        head.ends_with(tail).then_some(head)
    });
    repeated.map_or_else(|| text.clone(), str::to_owned)
}

/// Replaces long `{…}` groups (Go struct dumps such as `copier.request{…}`, a kilobyte
/// each) with `{…}`.
fn elide_dumps(text: &str) -> String {
    let (mut out, mut depth, mut start) = (String::new(), 0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '{' if depth == 0 => (depth, start) = (1, i),
            '{' => depth += 1,
            '}' if depth == 1 => {
                depth = 0;
                let group = &text[start..=i];
                out.push_str(if group.len() > 80 { "{…}" } else { group });
            }
            '}' if depth > 1 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    if depth > 0 {
        out.push_str(&text[start..]);
    }
    out
}

fn api_error(call: String, e: podman_api::Error) -> PodmanError {
    PodmanError::api(call, fault_message(&e))
}

/// The result of a state change: 304 means it already was so, 404 gives `absent`.
fn settle(
    answer: podman_api::Result<()>,
    absent: Result<(), PodmanError>,
    call: impl FnOnce() -> String,
) -> Result<(), PodmanError> {
    match answer {
        Ok(()) => Ok(()),
        Err(e) => match status(&e) {
            Some(304) => Ok(()),
            Some(404) => absent,
            _ => Err(api_error(call(), e)),
        },
    }
}

fn not_found(id: &str) -> PodmanError {
    let what = format!("container {}", short(id));
    PodmanError::NotFound { what }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn regex_escape(s: &str) -> String {
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
    fn tidy_drops_the_repeated_cause() {
        let text =
            "creating container storage: that name is already in use: that name is already in use";
        assert_eq!(
            tidy(text),
            "creating container storage: that name is already in use"
        );
        assert_eq!(tidy("no such container: gone"), "no such container: gone");
        let dump = format!(
            "bulk transfer for r{{{}}}: reading tar: unexpected EOF",
            "x".repeat(100)
        );
        let text = format!("{dump}: {dump}");
        assert_eq!(
            tidy(&text),
            "bulk transfer for r{…}: reading tar: unexpected EOF"
        );
        assert_eq!(tidy("short {a: b}: c"), "short {a: b}: c");
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

    const EVENT: &str = r#"{"Type":"container","Action":"died","Actor":{"ID":"abc","Attributes":{"io.lanectl.instance":"me","io.lanectl.lane":"a"}},"time":1764000000,"timeNano":1764000000123456789}"#;

    #[test]
    fn an_event_line_of_this_instance_becomes_a_trigger() {
        let e = parse_event(EVENT.as_bytes(), "me").expect("ours");
        assert_eq!(
            (e.lane.as_deref(), e.action.as_str(), e.id.as_str()),
            (Some("a"), "died", "abc")
        );
        let nanos = e
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert_eq!(nanos, 1_764_000_000_123_456_789);
        assert!(
            parse_event(EVENT.as_bytes(), "other").is_none(),
            "another instance"
        );
        assert!(parse_event(b"not json\n", "me").is_none());
        assert!(parse_event(b"  \n", "me").is_none());
    }

    #[test]
    fn a_query_value_is_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"a":["b=c"]}"#),
            "%7B%22a%22%3A%5B%22b%3Dc%22%5D%7D"
        );
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
    }

    /// A fake Podman on a unix socket: reads a request, then plays `answer`.
    async fn fake_events(answer: Option<String>) -> (tempfile::TempDir, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            if let Some(answer) = answer {
                conn.write_all(answer.as_bytes()).await.unwrap();
            }
            // Keep the connection open, as a quiet stream does.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        (dir, format!("unix://{}", socket.display()))
    }

    #[tokio::test]
    async fn the_stream_counts_as_connected_only_once_podman_answered() {
        let (_dir, url) = fake_events(None).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let first = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(first.is_err(), "connected before any answer: {first:?}");

        let line = format!("{EVENT}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
            line.len()
        );
        let (_dir, url) = fake_events(Some(answer)).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let mut items = Vec::new();
        for _ in 0..2 {
            let item = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            let item = item.expect("in time").expect("open");
            assert!(!matches!(item, StreamItem::Failed(_)), "{item:?}");
            items.push(item);
        }
        assert_eq!(items[0], StreamItem::Connected);
        assert!(matches!(&items[1], StreamItem::Event(e) if e.action == "died"));
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_follower_is_gone_even_if_podman_is_quiet() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
        let (_dir, url) = fake_events(Some(answer)).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let task = tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(first, Ok(Some(StreamItem::Connected))),
            "{first:?}"
        );
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(2), task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "still following: {ended:?}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_an_error_not_a_connection() {
        let (_dir, url) = fake_events(Some(
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".into(),
        ))
        .await;
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let result = follow_events(&url, "me", None, &tx).await;
        assert!(result.is_err_and(|e| e.to_string().contains("500")));
    }

    #[test]
    fn states_map_to_our_four() {
        assert_eq!(State::parse("created"), State::Created);
        assert_eq!(State::parse("running"), State::Running);
        assert_eq!(State::parse("stopped"), State::Exited);
        assert_eq!(State::parse("paused"), State::Other("paused".into()));
    }
}
