//! What Podman holds for this instance: one list call per pass, grouped by
//! lane. No per-lane inspect: the list gives state, labels and ports.

use std::collections::BTreeMap;

use crate::container::Observed;
use crate::labels;
use crate::podman::{Podman, PodmanError};

/// This instance's containers by lane name. A container with the instance
/// label but no lane label is kept under "" so that it is never mistaken for
/// nothing (and never touched).
pub async fn observe(
    podman: &Podman,
    instance: &str,
) -> Result<BTreeMap<String, Vec<Observed>>, PodmanError> {
    let containers = podman.list_instance(instance).await?;
    Ok(group(containers, instance))
}

fn group(containers: Vec<Observed>, instance: &str) -> BTreeMap<String, Vec<Observed>> {
    let mut by_lane: BTreeMap<String, Vec<Observed>> = BTreeMap::new();
    for c in containers {
        // The filter already asked for this; checking again costs nothing and
        // keeps "never touch a foreign container" true whatever the API does.
        if c.labels.get(labels::INSTANCE).map(String::as_str) != Some(instance) {
            continue;
        }
        let lane = c.labels.get(labels::LANE).cloned().unwrap_or_default();
        by_lane.entry(lane).or_default().push(c);
    }
    by_lane
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::State;

    fn c(instance: &str, lane: &str) -> Observed {
        Observed {
            id: format!("{instance}-{lane}"),
            name: lane.into(),
            labels: BTreeMap::from([
                (labels::INSTANCE.to_string(), instance.to_string()),
                (labels::LANE.to_string(), lane.to_string()),
            ]),
            state: State::Running,
            ever_started: true,
            exit_code: None,
            exited_at: None,
            ports: vec![],
        }
    }

    #[test]
    fn containers_of_another_instance_are_never_grouped() {
        let grouped = group(vec![c("me", "a"), c("other", "b"), c("me", "a")], "me");
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped["a"].len(), 2);
    }
}
