//! systemd's service notifications (`Type=notify`), through the `sd-notify`
//! crate: `READY=1` with a first `STATUS=` once the daemon's first full
//! converge is done, `STATUS=` again whenever the one-line summary changes,
//! `WATCHDOG=1` every half `WATCHDOG_USEC` from a task of the daemon's own
//! runtime (a loop stuck so that its tasks do not run stops the pings, and
//! systemd restarts it), `STOPPING=1` at shutdown. Outside systemd
//! (`NOTIFY_SOCKET` unset) each is a no-op.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

use crate::lock::lock;
use crate::status::Phase;

/// The daemon's side of the notifications.
#[derive(Debug, Default)]
pub struct Notifier {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    ready: bool,
    /// Each lane's phase after its last reconcile.
    phases: BTreeMap<String, Phase>,
    /// The summary last sent.
    sent: String,
}

impl Notifier {
    /// A lane's phase after a reconcile (`None`: the lane is gone).
    pub fn lane(&self, lane: &str, phase: Option<Phase>) {
        let mut inner = lock(&self.inner);
        match phase {
            Some(phase) => inner.phases.insert(lane.to_string(), phase),
            None => inner.phases.remove(lane),
        };
        if inner.ready {
            send_status(&mut inner);
        }
    }

    /// The first full converge is done: `READY=1` with the summary (once).
    pub fn ready(&self) {
        let mut inner = lock(&self.inner);
        if inner.ready {
            return;
        }
        inner.ready = true;
        let summary = summary(&inner.phases);
        notify(&[NotifyState::Ready, NotifyState::Status(&summary)]);
        inner.sent = summary;
    }

    /// Whether `READY=1` went out.
    pub fn is_ready(&self) -> bool {
        lock(&self.inner).ready
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        notify(&[NotifyState::Stopping]);
    }
}

/// How often the watchdog wants a ping, when systemd set one up for us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|every| every / 2)
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    notify(&[NotifyState::Watchdog]);
}

fn send_status(inner: &mut Inner) {
    let summary = summary(&inner.phases);
    if summary != inner.sent {
        notify(&[NotifyState::Status(&summary)]);
        inner.sent = summary;
    }
}

/// `3 lanes: 2 ready, 1 failed`, phases in a fixed order.
fn summary(phases: &BTreeMap<String, Phase>) -> String {
    let order = [
        Phase::Ready,
        Phase::Degraded,
        Phase::Pending,
        Phase::Stopped,
        Phase::Failed,
        Phase::Invalid,
    ];
    let counts: Vec<String> = order
        .iter()
        .filter_map(|p| {
            let n = phases.values().filter(|q| *q == p).count();
            (n > 0).then(|| format!("{n} {p}"))
        })
        .collect();
    match phases.len() {
        0 => "no lanes".into(),
        1 => format!("1 lane: {}", counts.join(", ")),
        n => format!("{n} lanes: {}", counts.join(", ")),
    }
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "systemd notification not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_phases_in_a_fixed_order() {
        let mut phases = BTreeMap::new();
        assert_eq!(summary(&phases), "no lanes");
        phases.insert("a".to_string(), Phase::Failed);
        assert_eq!(summary(&phases), "1 lane: 1 failed");
        phases.insert("b".to_string(), Phase::Ready);
        phases.insert("c".to_string(), Phase::Ready);
        assert_eq!(summary(&phases), "3 lanes: 2 ready, 1 failed");
    }
}
