//! The operations on containers and images: list, find, inspect, create, copy in and
//! out, start, stop, remove.

use podman_api::opts::{
    ContainerDeleteOpts, ContainerListFilter, ContainerListOpts, ContainerStopOpts,
};

use super::convert::{belongs, create_opts, ever_started, observed, regex_escape};
use super::fault::{api_error, bounded, fault_message, not_found, settle, status};
use super::{
    CALL_TIMEOUT, COPY_TIMEOUT, CreateRequest, Inspected, Podman, PodmanError, STOP_TIMEOUT,
};
use crate::container::{Observed, PublishedPort, State, short};
use crate::labels::{INSTANCE as INSTANCE_LABEL, LANE as LANE_LABEL};

impl Podman {
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
        let list = bounded("list", CALL_TIMEOUT, self.api.containers().list(&opts)).await;
        let call = || format!("list containers of lane {lane}");
        let found = list
            .map_err(|e| api_error(call(), e))?
            .into_iter()
            .map(observed);
        Ok(found.filter(|c| belongs(c, instance, Some(lane))).collect())
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
        match bounded(
            "image-inspect",
            CALL_TIMEOUT,
            self.api.images().get(reference).inspect(),
        )
        .await
        {
            // The ID goes into the lane hash: an answer without one is an
            // error, never an empty ID that would hash as a different image.
            Ok(image) => match image.id.as_deref().filter(|id| !id.is_empty()) {
                Some(id) => Ok(Some(id.strip_prefix("sha256:").unwrap_or(id).to_owned())),
                None => Err(PodmanError::api(call(), "Podman's answer has no image ID")),
            },
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(api_error(call(), e)),
        }
    }

    /// Creates (does not start) a container; returns its ID.
    pub async fn create(&self, req: &CreateRequest) -> Result<String, PodmanError> {
        let call = || format!("create container {}", req.name);
        let opts = create_opts(req).map_err(|message| PodmanError::api(call(), message))?;
        let e = match bounded("create", CALL_TIMEOUT, self.api.containers().create(&opts)).await {
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
            "copy",
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
        let answer = bounded(
            "start",
            CALL_TIMEOUT,
            self.api.containers().get(id).start(None),
        )
        .await;
        settle(answer, Err(not_found(id)), || {
            format!("start container {}", short(id))
        })
    }

    /// Renames a container (the swap of a start-first rollout).
    pub async fn rename(&self, id: &str, name: &str) -> Result<(), PodmanError> {
        let answer = bounded(
            "rename",
            CALL_TIMEOUT,
            self.api.containers().get(id).rename(name),
        )
        .await;
        settle(answer, Err(not_found(id)), || {
            format!("rename container {} to {name}", short(id))
        })
    }

    /// Thaws a paused container.
    pub async fn unpause(&self, id: &str) -> Result<(), PodmanError> {
        let answer = bounded(
            "unpause",
            CALL_TIMEOUT,
            self.api.containers().get(id).unpause(),
        )
        .await;
        settle(answer, Err(not_found(id)), || {
            format!("unpause container {}", short(id))
        })
    }

    /// Stops a container within its own stop timeout; one already stopped is fine.
    pub async fn stop(&self, id: &str) -> Result<(), PodmanError> {
        let opts = ContainerStopOpts::default();
        let answer = bounded(
            "stop",
            STOP_TIMEOUT,
            self.api.containers().get(id).stop(&opts),
        )
        .await;
        settle(answer, Err(not_found(id)), || {
            format!("stop container {}", short(id))
        })
    }

    /// Removes a container, first stopping it within its own stop timeout; one already
    /// gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), PodmanError> {
        let opts = ContainerDeleteOpts::builder().force(true).build();
        let answer = bounded(
            "remove",
            STOP_TIMEOUT,
            self.api.containers().get(id).delete(&opts),
        )
        .await;
        settle(answer, Ok(()), || format!("remove container {}", short(id)))
    }

    /// Inspects a container; `None` when it does not exist. Published ports are known
    /// from create on, before the first start.
    pub async fn inspect(&self, id: &str) -> Result<Option<Inspected>, PodmanError> {
        let data = match bounded(
            "inspect",
            CALL_TIMEOUT,
            self.api.containers().get(id).inspect(),
        )
        .await
        {
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
        let annotations = data
            .config
            .and_then(|c| c.annotations)
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(Some(Inspected {
            id: data.id.unwrap_or_default(),
            name: data.name.unwrap_or_default(),
            state: State::parse(&status.unwrap_or_default()),
            ever_started: ever_started(started_at.map(|t| t.timestamp())),
            ports,
            annotations,
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
        let list = bounded("list", CALL_TIMEOUT, self.api.containers().list(&opts)).await;
        Ok(list
            .map_err(|e| api_error(call(), e))?
            .into_iter()
            .map(observed)
            .collect())
    }
}
