//! What is measured: the table's rows (`Key`), their units and the samples per N.

use std::collections::BTreeMap;
use std::time::Duration;

/// One row of the table, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    LanectlCold,
    LanectlNoop,
    LanectlEdit,
    DaemonStart,
    DaemonManifest,
    DaemonRemoved,
    DaemonRss,
    DaemonCpu,
    DaemonCpuQuiet,
    DaemonRssMetrics,
    DaemonCpuMetrics,
    FloorCold,
    FloorNoop,
    FloorEdit,
    FloorRemove,
    FloorOneLane,
    GoCold,
    GoNoop,
    GoEdit,
    ComposeCold,
    ComposeNoop,
    ComposeEdit,
    RolloutStopFailed,
    RolloutStopGap,
    RolloutStablePorts,
    RolloutStartFailed,
    RolloutStartGap,
    RolloutStartServing,
    RolloutStartDone,
    RolloutComposeFailed,
    RolloutComposeGap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Seconds,
    Count,
    MiB,
    Percent,
}

impl Key {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Key::LanectlCold => "lanectl apply, cold",
            Key::LanectlNoop => "lanectl apply, no-op",
            Key::LanectlEdit => "lanectl apply, one env edit",
            Key::DaemonStart => "lanectl run: start → all ready",
            Key::DaemonManifest => "lanectl run: manifest written → ready",
            Key::DaemonRemoved => "lanectl run: rm -f → ready again",
            Key::DaemonRss => "lanectl run: idle RSS (max)",
            Key::DaemonCpu => "lanectl run: idle CPU (% of a core)",
            Key::DaemonCpuQuiet => "lanectl run: idle CPU, median second",
            Key::DaemonRssMetrics => "lanectl run --metrics: idle RSS (max), scraped every 5 s",
            Key::DaemonCpuMetrics => "lanectl run --metrics: idle CPU (% of a core)",
            Key::FloorCold => "floor: cold (create, copy, start, inspect, probe)",
            Key::FloorNoop => "floor: no-op (1 list + 1 probe per lane)",
            Key::FloorEdit => "floor: one edit (rm -f + one lane)",
            Key::FloorRemove => "floor: rm -f of one lane",
            Key::FloorOneLane => "floor: one lane create+copy+start+probe",
            Key::GoCold => "Go runtime's CLI sequence, cold",
            Key::GoNoop => "Go runtime's CLI sequence, no-op",
            Key::GoEdit => "Go runtime's CLI sequence, one edit",
            Key::ComposeCold => "docker-compose up -d, cold",
            Key::ComposeNoop => "docker-compose up -d, no-op",
            Key::ComposeEdit => "docker-compose up -d, one edit",
            Key::RolloutStopFailed => "one lane recreated, stop-first: failed requests",
            Key::RolloutStopGap => "one lane recreated, stop-first: longest gap",
            Key::RolloutStablePorts => "stop-first recreates that kept the host port",
            Key::RolloutStartFailed => "one lane recreated, start-first: failed requests",
            Key::RolloutStartGap => "one lane recreated, start-first: longest gap",
            Key::RolloutStartServing => "start-first: edit → new version serving",
            Key::RolloutStartDone => "start-first: edit → old one gone (drain 500 ms)",
            Key::RolloutComposeFailed => "one lane recreated, docker-compose: failed requests",
            Key::RolloutComposeGap => "one lane recreated, docker-compose: longest gap",
        }
    }

    pub(crate) fn id(self) -> String {
        let debug = format!("{self:?}");
        let mut id = String::new();
        for (i, c) in debug.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                id.push('_');
            }
            id.push(c.to_ascii_lowercase());
        }
        id
    }

    pub(crate) fn unit(self) -> Unit {
        match self {
            Key::DaemonRss | Key::DaemonRssMetrics => Unit::MiB,
            Key::DaemonCpu
            | Key::DaemonCpuQuiet
            | Key::DaemonCpuMetrics
            | Key::RolloutStablePorts => Unit::Percent,
            Key::RolloutStopFailed | Key::RolloutStartFailed | Key::RolloutComposeFailed => {
                Unit::Count
            }
            _ => Unit::Seconds,
        }
    }

    /// The floor a lanectl figure is divided by.
    pub(crate) fn floor(self) -> Option<Key> {
        match self {
            Key::LanectlCold | Key::DaemonStart => Some(Key::FloorCold),
            Key::LanectlNoop => Some(Key::FloorNoop),
            Key::LanectlEdit | Key::DaemonRemoved => Some(Key::FloorEdit),
            Key::DaemonManifest | Key::RolloutStartServing => Some(Key::FloorOneLane),
            _ => None,
        }
    }

    /// The peers doing the same work; the best (lowest median) is the ratio's base.
    pub(crate) fn peers(self) -> &'static [Key] {
        match self {
            Key::LanectlCold | Key::DaemonStart => &[Key::GoCold, Key::ComposeCold],
            Key::LanectlNoop => &[Key::GoNoop, Key::ComposeNoop],
            Key::LanectlEdit => &[Key::GoEdit, Key::ComposeEdit],
            Key::RolloutStopGap | Key::RolloutStartGap => &[Key::RolloutComposeGap],
            _ => &[],
        }
    }
}

/// Every sample, by lane count and row.
#[derive(Default)]
pub(crate) struct Results {
    pub(crate) samples: BTreeMap<(usize, Key), Vec<f64>>,
    pub(crate) notes: Vec<String>,
}

impl Results {
    pub(crate) fn add(&mut self, n: usize, key: Key, value: f64) {
        self.samples.entry((n, key)).or_default().push(value);
    }

    pub(crate) fn add_time(&mut self, n: usize, key: Key, took: Duration) {
        self.add(n, key, took.as_secs_f64());
    }

    pub(crate) fn stats(&self, n: usize, key: Key) -> Option<Stats> {
        self.samples.get(&(n, key)).map(|v| Stats::of(v))
    }

    pub(crate) fn median(&self, n: usize, key: Key) -> Option<f64> {
        self.stats(n, key).map(|s| s.median)
    }

    pub(crate) fn ratio_to_floor(&self, n: usize, key: Key) -> Option<f64> {
        Some(self.median(n, key)? / self.median(n, key.floor()?)?)
    }

    /// (peer, ratio) against the peer with the lowest median.
    pub(crate) fn ratio_to_best_peer(&self, n: usize, key: Key) -> Option<(Key, f64)> {
        let best = key
            .peers()
            .iter()
            .filter_map(|&p| Some((p, self.median(n, p)?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        Some((best.0, self.median(n, key)? / best.1))
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stats {
    pub(crate) fn of(values: &[f64]) -> Stats {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) {
            (v[mid - 1] + v[mid]) / 2.0
        } else {
            v[mid]
        };
        Stats {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}
