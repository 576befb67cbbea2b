//! `down [LANE...]`: remove this instance's containers (default all) and
//! their status files: a pass in which the lanes' desired state is "none".
//! Containers of other instances are never touched.

use super::Exit;
use crate::cli::Global;
use crate::reconcile::pass;
use crate::status::Phase;

pub async fn run(global: &Global, lanes: Vec<String>) -> anyhow::Result<Exit> {
    // A mistyped --dir (with --instance given) must not take an instance
    // down: every other command refuses a missing directory too.
    if !global.dir.is_dir() {
        anyhow::bail!(
            "lanes directory {} does not exist or is not a directory: nothing removed \
             (to take down the containers of a directory that is gone, make it again, \
             empty, and run down on it)",
            global.dir.display()
        );
    }
    let ctx = super::context(global).await?;
    let outcomes = pass::down(ctx, lanes).await?;
    for o in &outcomes {
        for name in &o.removed {
            println!("{}  removed container {name}", o.lane);
        }
        if o.phase == Phase::Failed {
            println!("{}  failed: {}", o.lane, o.message);
        }
    }
    Ok(Exit::failed_if(
        outcomes.iter().any(|o| o.phase == Phase::Failed),
    ))
}
