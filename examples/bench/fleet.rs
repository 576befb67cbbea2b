//! The generated lanes: N lanes in a temporary directory, owned by one measurement.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use futures_util::{StreamExt, TryStreamExt, stream};

use lanectl::status::Status;
use podman_api::Podman;
use podman_api::opts::ContainerListFilter;

use crate::util::{list_opts, listed_port, probe};
use crate::{BENCH_LABEL, Bench, JOBS, PORT, PROBE_PATH, WORKER_TARGET};

/// N lanes in a temporary directory (`lanes.d/`, `codex/<lane>/`,
/// `work/<lane>/`), owned by one measurement: `tag` names its containers
/// (`<tag>-<lane>`), labels them and is lanectl's `--instance`.
pub(crate) struct Fleet {
    pub(crate) root: tempfile::TempDir,
    pub(crate) tag: String,
    pub(crate) lanes: Vec<String>,
}

impl Fleet {
    pub(crate) fn new(bench: &Bench, tag: String, n: usize) -> Result<Fleet> {
        let root = tempfile::Builder::new()
            .prefix("lanectl-bench-")
            .tempdir()?;
        std::fs::create_dir(root.path().join("lanes.d"))?;
        let fleet = Fleet {
            root,
            tag,
            lanes: (0..n).map(|i| format!("lane-{i:03}")).collect(),
        };
        for lane in &fleet.lanes {
            fleet.add_lane(bench, lane)?;
        }
        Ok(fleet)
    }

    /// Writes a lane's codex and workspace and its manifest (revision 0).
    pub(crate) fn add_lane(&self, bench: &Bench, lane: &str) -> Result<()> {
        let codex = self.codex_dir(lane);
        std::fs::create_dir_all(codex.join("prompts"))?;
        std::fs::create_dir_all(self.work_dir(lane))?;
        std::fs::write(
            codex.join("auth.json"),
            format!("{{\"token\": \"bench-{lane}-{}\"}}\n", "x".repeat(160)),
        )?;
        std::fs::write(
            codex.join("config.toml"),
            format!(
                "model = \"bench\"\nlane = \"{lane}\"\n{}",
                "# pad\n".repeat(40)
            ),
        )?;
        std::fs::write(
            codex.join("prompts/system.md"),
            "You are a benchmark lane.\n".repeat(40),
        )?;
        self.write_manifest(bench, lane, 0)
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.root.path().join("lanes.d")
    }

    pub(crate) fn codex_dir(&self, lane: &str) -> PathBuf {
        self.root.path().join("codex").join(lane)
    }

    pub(crate) fn work_dir(&self, lane: &str) -> PathBuf {
        self.root.path().join("work").join(lane)
    }

    pub(crate) fn container(&self, lane: &str) -> String {
        format!("{}-{lane}", self.tag)
    }

    /// The 4 env vars; `revision` is what an "edit" changes.
    pub(crate) fn env(lane: &str, revision: u32) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("INBOX_LANE_ID".into(), lane.into()),
            ("INBOX_WORKSPACE".into(), "/workspace".into()),
            (
                "INBOX_API_URL".into(),
                "http://host.containers.internal:8080".into(),
            ),
            ("BENCH_REVISION".into(), revision.to_string()),
        ])
    }

    pub(crate) fn write_manifest(&self, bench: &Bench, lane: &str, revision: u32) -> Result<()> {
        self.write_manifest_with(bench, lane, revision, "")
    }

    /// [`Fleet::write_manifest`] with `extra` (top-level keys) appended.
    pub(crate) fn write_manifest_with(
        &self,
        bench: &Bench,
        lane: &str,
        revision: u32,
        extra: &str,
    ) -> Result<()> {
        let mut env = String::new();
        for (k, v) in Self::env(lane, revision) {
            writeln!(env, "  {k}: \"{v}\"")?;
        }
        let yaml = format!(
            "image: {image}\n\
             container_name: {name}\n\
             user: root\n\
             entrypoint: [{WORKER_TARGET}]\n\
             command: [serve]\n\
             workdir: /workspace\n\
             env:\n{env}\
             labels: {{{BENCH_LABEL}: {tag}}}\n\
             mounts:\n\
             \x20 - {{source: {worker}, target: {WORKER_TARGET}, read_only: true}}\n\
             \x20 - {{source: ../work/{lane}, target: /workspace}}\n\
             ports: [{{container: {PORT}, host_ip: 127.0.0.1}}]\n\
             codex: {{source: ../codex/{lane}, target: /root/.codex, fingerprint_env: INBOX_RUNTIME_CODEX_SHA}}\n\
             probe: {{port: {PORT}, path: {PROBE_PATH}, timeout: 30s, interval: 50ms}}\n\
             stop_timeout: 2s\n{extra}",
            image = bench.image,
            name = self.container(lane),
            tag = self.tag,
            worker = bench.worker.display(),
        );
        let path = self.dir().join(format!("{lane}.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("write {}", path.display()))
    }

    /// The lane's status file as lanectl wrote it (None while absent or unreadable).
    pub(crate) fn status(&self, lane: &str) -> Option<Status> {
        lanectl::status::read(&self.dir(), lane)
    }

    /// One list call for the fleet's containers, then a probe of every
    /// published port, 8 at a time (`who` names the peer in errors).
    pub(crate) async fn probe_all(&self, api: &Podman, who: &str) -> Result<()> {
        let filter = ContainerListFilter::LabelKeyVal(BENCH_LABEL.into(), self.tag.clone());
        let listed = api.containers().list(&list_opts(filter)).await?;
        let ports: Vec<u16> = listed.iter().filter_map(listed_port).collect();
        ensure!(
            ports.len() == self.lanes.len(),
            "{who}: {} of {} lanes have a published port",
            ports.len(),
            self.lanes.len()
        );
        stream::iter(ports)
            .map(probe)
            .buffer_unordered(JOBS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// The codex files in the Go runtime's order: (relative path, bytes).
    pub(crate) fn codex_files(&self, lane: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let dir = self.codex_dir(lane);
        let mut files = Vec::new();
        for rel in ["auth.json", "config.toml", "prompts/system.md"] {
            files.push((rel.to_string(), std::fs::read(dir.join(rel))?));
        }
        files.sort();
        Ok(files)
    }
}

/// A lane's codex fingerprint, computed by lanectl's own code (the Go
/// runtime's algorithm), so that the floor and the Go sequence label and
/// compare exactly what lanectl would.
pub(crate) fn fingerprint(codex: &Path) -> Result<String> {
    let policy = lanectl::content::Policy::of_process(false);
    lanectl::content::codex_fingerprint(codex, policy)
        .with_context(|| format!("fingerprint {}", codex.display()))
}
