//! One look at the world: the lanes directory, this instance's containers
//! grouped by lane, the image IDs of the valid lanes and (for `apply`) which
//! lanes' containers already answered their probe. One function builds it
//! ([`World::look`]) for `apply`, `plan`, `down`, the daemon's start and
//! every resync; lanes take their slice of it ([`World::take`]). The rules
//! every look keeps live here once: a container with our instance label but
//! no lane label is not ours to judge, a killed lanectl's temporary status
//! files go, and an empty lanes directory never prunes a host on its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Ctx;
use crate::container::Observed;
use crate::desired::{self, Desired, DirState, Holders, LoadOptions, Unsettled};
use crate::lane::ListError;
use crate::podman::PodmanError;
use crate::probe;
use crate::status;

/// Image IDs by reference (`None`: absent). A reference missing from the
/// map could not be looked up; the lane then looks it up itself.
pub type KnownImages = Arc<HashMap<String, Option<String>>>;

/// Why the world could not be seen (the whole pass stops: never plan
/// against a partial view).
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error(transparent)]
    Dir(#[from] ListError),
    #[error(transparent)]
    Podman(#[from] PodmanError),
    #[error(
        "{dir} holds no manifest while this instance still has {count} container(s): \
         not pruning them (a bad checkout must not wipe a host); pass --allow-prune-all to remove them"
    )]
    RefusePruneAll { dir: String, count: usize },
    #[error("reading the lanes directory ended abnormally")]
    Task(#[from] tokio::task::JoinError),
}

/// What one look saw.
#[derive(Debug)]
pub struct World {
    /// The lanes directory as read.
    pub dir: Arc<DirState>,
    /// This instance's containers by lane (never the `""` lane).
    containers: BTreeMap<String, Vec<Observed>>,
    images: KnownImages,
    /// Lanes whose container answered its probe while Podman listed:
    /// lane -> (container id, address that answered).
    answered: HashMap<String, (String, SocketAddr)>,
}

/// One lane's slice of the world: all its reconcile reads besides its own
/// status file.
#[derive(Debug, Default)]
pub struct LaneView {
    pub lane: String,
    /// `None`: no manifest (it was deleted, or `down` asks for none).
    pub desired: Option<Desired>,
    pub containers: Vec<Observed>,
    pub images: KnownImages,
    /// The container and address that answered an early probe; counts only
    /// if that container is kept on that address with nothing to do.
    pub answered: Option<(String, SocketAddr)>,
    /// sha256 of `_defaults.yaml` as read with the manifest.
    pub defaults_sha256: Option<String>,
    /// The host the lane's manifest names, when it is another one (then
    /// `desired` is `None`: it is not a lane here).
    pub elsewhere: Option<String>,
    /// Why its containers stay although it has no manifest here
    /// ([`keeps_moved_lane`]).
    pub keep: Option<String>,
}

/// What a look includes besides the directory and the containers.
#[derive(Debug, Clone, Default)]
pub struct Look {
    pub load: LoadOptions,
    /// Probe the lanes at the ports their status files name while Podman
    /// lists (an `apply` that may have nothing to do): these lanes, or all
    /// when empty. `None`: no early probes.
    pub probe_early: Option<Vec<String>>,
    /// Remove the temporary status files a killed lanectl left (`apply` and
    /// the daemon); `plan` changes nothing, not even those.
    pub tidy: bool,
}

/// Early probes in flight at once (each holds a socket).
const EARLY_PROBES_AT_ONCE: usize = 64;

impl World {
    /// Looks once: Podman's list call is the longest wait of a pass that has
    /// nothing to do, so the directory is read, the images looked up and the
    /// lanes probed meanwhile.
    pub async fn look(ctx: &Ctx, look: &Look) -> Result<World, WorldError> {
        let listed = CancellationToken::new();
        let (seen, containers) = tokio::join!(
            async {
                // Images and early probes look at every lane that resolved,
                // before the cross-lane rules (they need the containers).
                let dir = read_unsettled(ctx, look.load.clone()).await?;
                let images = look_up_images(ctx, &dir).await;
                let answered = match &look.probe_early {
                    Some(only) => probe_early(ctx, &dir, only, &listed).await,
                    None => HashMap::new(),
                };
                Ok::<_, WorldError>((dir, images, answered))
            },
            async {
                let observed = ctx.observe().await;
                listed.cancel();
                observed
            }
        );
        let (dir, images, answered) = seen?;
        let mut containers = containers?;
        containers.remove(""); // instance label without lane label: not ours to judge
        let dir = Arc::new(dir.settle(&Holders::of(&containers)));
        let stale = if look.tidy {
            status::remove_stale_temps(&ctx.dir)
        } else {
            0
        };
        if stale > 0 {
            info!(
                count = stale,
                "removed temporary status files of a killed lanectl"
            );
        }
        Ok(World {
            dir,
            containers,
            images: Arc::new(images),
            answered,
        })
    }

    /// What `down` needs: the containers and which lanes have status files;
    /// no manifest is read (`down` removes whatever they say), and a
    /// directory that cannot be listed only hides status files.
    pub async fn look_without_manifests(ctx: &Ctx) -> Result<World, WorldError> {
        let mut containers = ctx.observe().await?;
        containers.remove(""); // instance label without lane label: not ours to judge
        let listing = crate::lane::list_dir(&ctx.dir).unwrap_or_default();
        Ok(World {
            dir: Arc::new(DirState {
                lanes: BTreeMap::new(),
                listing,
                defaults_sha256: None,
                elsewhere: BTreeMap::new(),
                here: None,
                names_here: false,
            }),
            containers,
            images: KnownImages::default(),
            answered: HashMap::new(),
        })
    }

    /// Every lane the world knows of: manifests, containers, status files.
    pub fn lanes(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = self.dir.lanes.keys().cloned().collect();
        names.extend(self.containers.keys().cloned());
        names.extend(self.dir.listing.status_files.iter().cloned());
        names
    }

    /// The lanes that have containers.
    pub fn lanes_with_containers(&self) -> impl Iterator<Item = &String> {
        self.containers.keys()
    }

    /// The image IDs looked up.
    pub fn images(&self) -> &KnownImages {
        &self.images
    }

    /// Refuses a pass that would remove every container of the instance
    /// because the directory holds no manifest, unless `--allow-prune-all`.
    pub fn guard_prune_all(&self, dir: &Path, allow: bool) -> Result<(), WorldError> {
        let count: usize = self.containers.values().map(Vec::len).sum();
        if count > 0 && refuses_to_prune(&self.dir, allow) {
            return Err(WorldError::RefusePruneAll {
                dir: dir.display().to_string(),
                count,
            });
        }
        Ok(())
    }

    /// Takes a lane's slice out of the world (each lane once).
    pub fn take(&mut self, lane: &str) -> LaneView {
        LaneView {
            lane: lane.to_string(),
            desired: self.dir.lanes.get(lane).cloned(),
            containers: self.containers.remove(lane).unwrap_or_default(),
            images: self.images.clone(),
            answered: self.answered.remove(lane),
            defaults_sha256: self.dir.defaults_sha256.clone(),
            elsewhere: self.dir.elsewhere.get(lane).cloned(),
            keep: None,
        }
    }

    /// Takes a lane's slice with no manifest, whatever the directory says
    /// (`down`).
    pub fn take_without_manifest(&mut self, lane: &str) -> LaneView {
        LaneView {
            desired: None,
            elsewhere: None,
            ..self.take(lane)
        }
    }
}

/// The directory holds no manifest and pruning all was not allowed: a lane
/// without a manifest then keeps its containers (a bad checkout must not
/// wipe a host).
pub fn refuses_to_prune(dir: &DirState, allow_prune_all: bool) -> bool {
    dir.lanes.is_empty() && !allow_prune_all
}

/// Why a lane that moved to another host keeps its containers here: when
/// no lane of the directory names this host, this host's name more likely
/// changed (a new hostname, a mistyped `--host`) than every lane pinned to
/// it moved away, and a changed name must not wipe a host. `None`: it goes.
pub fn keeps_moved_lane(dir: &DirState, lane: &str, allow_prune_all: bool) -> Option<String> {
    let host = dir.elsewhere.get(lane)?;
    if dir.names_here || allow_prune_all {
        return None;
    }
    Some(format!(
        "not removed: it runs on host {host}, but no lane names this host ({}): if this \
         host's name changed, pass --host with the name the manifests use; \
         --allow-prune-all removes it",
        dir.here.as_deref().unwrap_or("?")
    ))
}

/// Reads the lanes directory off the async threads: it parses every manifest
/// and walks every codex and tracked tree (a large one takes a while), which
/// must not stall the event sources and the probes.
async fn read_unsettled(ctx: &Ctx, load: LoadOptions) -> Result<Unsettled, WorldError> {
    let dir = ctx.dir.clone();
    Ok(tokio::task::spawn_blocking(move || desired::read_dir(&dir, load)).await??)
}

/// Reads the lanes directory and applies the cross-lane rules. Only when
/// two lanes contest a container name or host port are the containers
/// listed, to learn which lane holds it (and keeps it).
pub async fn read_dir(ctx: &Ctx, load: LoadOptions) -> Result<DirState, WorldError> {
    let dir = read_unsettled(ctx, load).await?;
    if !dir.contested() {
        return Ok(dir.settle(&Holders::default()));
    }
    let containers = ctx.observe().await?;
    Ok(dir.settle(&Holders::of(&containers)))
}

/// Each distinct image of the valid lanes, looked up once (a failed lookup
/// is left out: that lane looks it up itself and says why it failed).
async fn look_up_images(ctx: &Ctx, dir: &Unsettled) -> HashMap<String, Option<String>> {
    let found = futures_util::future::join_all(
        dir.images()
            .into_iter()
            .map(|image| async move { (image.to_string(), ctx.podman.image_id(image).await) }),
    )
    .await;
    found
        .into_iter()
        .filter_map(|(image, id)| Some((image, id.ok()?)))
        .collect()
}

/// Until Podman's list call returns (`listed`), probes each lane at the port
/// its status file names.
async fn probe_early(
    ctx: &Ctx,
    dir: &Unsettled,
    only: &[String],
    listed: &CancellationToken,
) -> HashMap<String, (String, SocketAddr)> {
    let named = |lane: &String| only.is_empty() || only.contains(lane);
    let probes = dir.specs().filter_map(|(lane, spec)| {
        if !named(lane) {
            return None;
        }
        let probe = spec.probe.as_ref()?;
        let last = status::read(&ctx.dir, lane)?;
        let addr = last.endpoint_addr(probe.port)?;
        let id = last.container_id?;
        Some(async move {
            tokio::select! {
                ok = probe::once(addr, &probe.path) => ok.then(|| (lane.clone(), (id, addr))),
                () = listed.cancelled() => None,
            }
        })
    });
    let answered: HashMap<_, _> = futures_util::stream::iter(probes.collect::<Vec<_>>())
        .buffer_unordered(EARLY_PROBES_AT_ONCE)
        .filter_map(|a| async move { a })
        .collect()
        .await;
    debug!(
        answered = answered.len(),
        "probed early, while Podman listed the containers"
    );
    answered
}
