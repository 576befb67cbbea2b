//! The floor: the same Podman operations issued directly through podman-api, no lanectl logic.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow};
use futures_util::{StreamExt, TryStreamExt, stream};
use podman_api::Podman;
use podman_api::models::{ContainerMount, PortMapping};
use podman_api::opts::{ContainerCreateOpts, ContainerDeleteOpts};
use sha2::{Digest, Sha256};

use crate::fleet::{Fleet, fingerprint};
use crate::results::{Key, Results};
use crate::util::{probe, remove_tagged, tag, timed};
use crate::{BENCH_LABEL, Bench, JOBS, PORT, WORKER_TARGET};

/// lanectl's labels on a container (values of the same shape), plus the bench's.
pub(crate) fn floor_labels(fleet: &Fleet, lane: &str, fp: &str) -> BTreeMap<String, String> {
    let hash = |what: &str| hex::encode(Sha256::digest(format!("{lane}/{what}")));
    BTreeMap::from([
        (BENCH_LABEL.into(), fleet.tag.clone()),
        ("io.lanectl.managed-by".into(), "lanectl".into()),
        ("io.lanectl.instance".into(), fleet.tag.clone()),
        ("io.lanectl.lane".into(), lane.into()),
        (
            "io.lanectl.spec-hash".into(),
            format!("sha256:{}", hash("spec")),
        ),
        ("io.lanectl.config-hash".into(), hash("config")),
        ("io.lanectl.image-id".into(), hash("image")),
        ("io.lanectl.tracked-hash".into(), hash("tracked")),
        ("io.lanectl.codex-fingerprint".into(), fp.into()),
    ])
}

/// What the floor sends for one lane: the create body and the codex tar.
pub(crate) struct FloorLane {
    pub(crate) port_key: String,
    pub(crate) create: ContainerCreateOpts,
    pub(crate) tar: Vec<u8>,
}

impl FloorLane {
    /// The body lanectl sends for this lane's manifest (see `src/podman/convert.rs`'s `create_opts`).
    pub(crate) fn new(
        bench: &Bench,
        fleet: &Fleet,
        lane: &str,
        revision: u32,
    ) -> Result<FloorLane> {
        let files = fleet.codex_files(lane)?;
        let fp = fingerprint(&fleet.codex_dir(lane))?;
        let mut env = Fleet::env(lane, revision);
        env.insert("INBOX_RUNTIME_CODEX_SHA".into(), fp.clone());
        let mount = |source: &Path, target: &str, ro: bool| ContainerMount {
            destination: Some(target.into()),
            source: Some(source.display().to_string()),
            _type: Some("bind".into()),
            options: Some(vec![
                "rbind".into(),
                if ro { "ro" } else { "rw" }.into(),
                "z".into(),
            ]),
            uid_mappings: None,
            gid_mappings: None,
        };
        let create = ContainerCreateOpts::builder()
            .name(fleet.container(lane))
            .image(&bench.image)
            .env(&env)
            .labels(&floor_labels(fleet, lane, &fp))
            .stop_timeout(2)
            .user("root")
            .entrypoint([WORKER_TARGET])
            .command(["serve"])
            .work_dir("/workspace")
            .mounts([
                mount(&bench.worker, WORKER_TARGET, true),
                mount(&fleet.work_dir(lane), "/workspace", false),
            ])
            .portmappings([PortMapping {
                container_port: Some(PORT),
                host_ip: Some("127.0.0.1".into()),
                host_port: None,
                protocol: Some("tcp".into()),
                range: None,
            }])
            .build();
        Ok(FloorLane {
            port_key: format!("{PORT}/tcp"),
            create,
            tar: codex_tar(&files)?,
        })
    }

    /// create, archive copy, start, inspect for the port, probe. Podman 4.3
    /// can hand one random host port to two containers; the start of the
    /// second then fails and, as lanectl does, the container is made anew.
    pub(crate) async fn converge(&self, api: &Podman) -> Result<()> {
        let mut attempt = 1;
        let id = loop {
            let id = api.containers().create(&self.create).await?.id;
            let container = api.containers().get(&id);
            container
                .copy_to("/", hyper::Body::from(self.tar.clone()))
                .await?;
            match container.start(None).await {
                Ok(()) => break id,
                Err(e) if attempt < 3 && e.to_string().contains("address already in use") => {
                    let force = ContainerDeleteOpts::builder().force(true).build();
                    container.delete(&force).await?;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let container = api.containers().get(&id);
        let info = container.inspect().await?;
        let port = info
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|mut p| p.remove(&self.port_key).flatten())
            .and_then(|hosts| hosts.into_iter().find_map(|h| h.host_port?.parse().ok()))
            .ok_or_else(|| anyhow!("container {id} publishes no {}", self.port_key))?;
        probe(port).await
    }
}

/// The codex files under `root/.codex/`, owned by root, as lanectl sends them.
pub(crate) fn codex_tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut entry = |path: &str, kind: tar::EntryType, mode: u32, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(bytes.len() as u64);
        tar.append_data(&mut h, path, bytes)
    };
    entry("root/.codex", tar::EntryType::Directory, 0o700, &[])?;
    entry("root/.codex/prompts", tar::EntryType::Directory, 0o700, &[])?;
    for (rel, bytes) in files {
        entry(
            &format!("root/.codex/{rel}"),
            tar::EntryType::Regular,
            0o644,
            bytes,
        )?;
    }
    Ok(tar.into_inner()?)
}

pub(crate) async fn floor_noop(api: &Podman, fleet: &Fleet) -> Result<()> {
    fleet.probe_all(api, "floor").await
}

pub(crate) async fn measure_floor(
    bench: &Bench,
    res: &mut Results,
    n: usize,
    run: usize,
) -> Result<()> {
    let fleet = Fleet::new(bench, tag("fl", n, run), n)?;
    let api = &bench.api;
    let outcome = async {
        // Bodies and tars are made before the clock starts: no lanectl logic is timed.
        let lanes = fleet
            .lanes
            .iter()
            .map(|lane| FloorLane::new(bench, &fleet, lane, 0))
            .collect::<Result<Vec<_>>>()?;
        let cold = stream::iter(&lanes)
            .map(|lane| lane.converge(api))
            .buffer_unordered(JOBS)
            .try_collect::<Vec<()>>();
        let (_, cold) = timed(cold).await?;
        let ((), noop) = timed(floor_noop(api, &fleet)).await?;
        let edited = FloorLane::new(bench, &fleet, &fleet.lanes[0], 1)?;
        let force = ContainerDeleteOpts::builder().force(true).build();
        let name = fleet.container(&fleet.lanes[0]);
        let remove =
            async { Ok::<(), anyhow::Error>(api.containers().get(&name).delete(&force).await?) };
        let ((), removed) = timed(remove).await?;
        let ((), one) = timed(edited.converge(api)).await?;
        res.add_time(n, Key::FloorCold, cold);
        res.add_time(n, Key::FloorNoop, noop);
        res.add_time(n, Key::FloorEdit, removed + one);
        res.add_time(n, Key::FloorRemove, removed);
        res.add_time(n, Key::FloorOneLane, one);
        Ok(())
    }
    .await;
    remove_tagged(api, &fleet.tag).await?;
    outcome
}
