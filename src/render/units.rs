//! lanectl's units and names in Kubernetes' terms: memory and CPU quantities,
//! whole seconds, object names, label values.

use std::time::Duration;

/// Memory in bytes as a Kubernetes quantity in binary units. A bare `m` is
/// milli in Kubernetes (`512m` would be half a byte): lanectl's `512m`,
/// 512 MiB, is `512Mi`.
pub fn memory(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "Ti"),
        (1 << 30, "Gi"),
        (1 << 20, "Mi"),
        (1 << 10, "Ki"),
    ];
    for (size, unit) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// CPUs as a Kubernetes quantity: whole CPUs as a number, else millicores
/// (Kubernetes' finest unit; at least 1m).
pub fn cpu(cpus: f64) -> String {
    let milli = (cpus * 1000.0).round().max(1.0);
    // Bounded: lanectl refuses more CPUs than a u32 of millicores holds.
    let milli = milli.min(f64::from(u32::MAX)) as u64;
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// A duration in whole seconds, rounded up (Kubernetes counts in seconds).
pub fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A lane's name as a Kubernetes object name: a DNS-1035 label (what a
/// Service needs, and so fit for every kind): lowercase letters, digits and
/// `-`, starting with a letter, ending with a letter or digit, at most 63.
/// Lane names are lowercase already; `_` and `.` become `-`, a leading digit
/// gets `lane-` before it. Two lanes may map to one name: the caller checks.
pub fn object_name(lane: &str) -> String {
    let mapped: String = lane
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let mut name = if mapped.starts_with(|c: char| c.is_ascii_lowercase()) {
        mapped
    } else {
        format!("lane-{mapped}")
    };
    name.truncate(63);
    let end = name.trim_end_matches('-').len();
    name.truncate(end);
    name
}

/// Whether Kubernetes takes `value` as a label value: at most 63 of
/// letters, digits, `-`, `_`, `.`, starting and ending with a letter or
/// digit (or empty).
pub fn is_label_value(value: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(inner)
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Whether Kubernetes takes `key` as a label key: an optional DNS
/// subdomain prefix and `/`, then a name as a label value (not empty).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253 && p.split('.').all(|l| crate::lanespec::is_dns_label(l, true))
    });
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// How Kubernetes takes an env var's name.
#[derive(Debug, PartialEq, Eq)]
pub enum EnvName {
    /// Letters, digits, `_`, `-`, `.`, not starting with a digit: every
    /// version takes it.
    Portable,
    /// Other printable ASCII but `=`: taken since the relaxed rule (on by
    /// default since 1.32).
    Relaxed,
    /// Anything else: refused.
    Refused,
}

pub fn env_name(name: &str) -> EnvName {
    let portable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if !name.is_empty()
        && name.chars().all(portable)
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        EnvName::Portable
    } else if !name.is_empty()
        && name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
        && !name.contains('=')
    {
        EnvName::Relaxed
    } else {
        EnvName::Refused
    }
}

/// Text as Kubernetes must be given it to pass it on unchanged: it expands
/// `$(NAME)` in a container's command, args and env values, and reads `$$`
/// as `$` (Podman does neither).
pub fn no_expansion(text: &str) -> String {
    text.replace('$', "$$")
}

/// [`no_expansion`] of each word.
pub fn no_expansions(words: &[String]) -> Vec<String> {
    words.iter().map(|w| no_expansion(w)).collect()
}

/// A Secret key for the `index`th codex file, `rel` its relative path: keys
/// may hold only letters, digits, `-`, `_` and `.`, so the path itself
/// (with its `/`) cannot be one; the number keeps keys apart, the file's
/// name keeps them readable.
pub fn secret_key(index: usize, rel: &str) -> String {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    let base: String = base
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .take(200)
        .collect();
    format!("{index:04}-{base}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_in_binary_units_never_a_bare_m() {
        assert_eq!(memory(512 << 20), "512Mi");
        assert_eq!(memory(2 << 30), "2Gi");
        assert_eq!(memory(1536 << 20), "1536Mi");
        assert_eq!(memory(3 << 40), "3Ti");
        assert_eq!(memory(64 << 10), "64Ki");
        assert_eq!(memory(1000), "1000");
        assert_eq!(memory((1 << 20) + 1), "1048577");
        for bytes in [1u64, 1000, 512 << 20, 7 << 30] {
            assert!(!memory(bytes).ends_with('m'), "{bytes}");
        }
    }

    #[test]
    fn cpus_are_whole_or_millicores() {
        assert_eq!(cpu(1.5), "1500m");
        assert_eq!(cpu(2.0), "2");
        assert_eq!(cpu(0.25), "250m");
        assert_eq!(cpu(0.0001), "1m");
        assert_eq!(cpu(0.0006), "1m");
        assert_eq!(cpu(1.2345), "1235m");
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(seconds_up(Duration::from_millis(250)), 1);
        assert_eq!(seconds_up(Duration::from_secs(10)), 10);
        assert_eq!(seconds_up(Duration::from_millis(10_001)), 11);
        assert_eq!(seconds_up(Duration::ZERO), 0);
    }

    #[test]
    fn lane_names_map_to_dns_1035_labels() {
        assert_eq!(object_name("alpha"), "alpha");
        assert_eq!(object_name("a_b.c-d"), "a-b-c-d");
        assert_eq!(object_name("9lives"), "lane-9lives");
        assert_eq!(object_name("trail_"), "trail");
        assert_eq!(object_name("x."), "x");
        let long = format!("9{}", "a".repeat(62));
        let mapped = object_name(&long);
        assert_eq!(mapped.len(), 63);
        for lane in ["alpha", "a_b.c-d", "9lives", "trail_", "x.", &long, "a-_-b"] {
            let name = object_name(lane);
            assert!(name.len() <= 63, "{name}");
            assert!(name.starts_with(|c: char| c.is_ascii_lowercase()), "{name}");
            assert!(
                name.ends_with(|c: char| c.is_ascii_alphanumeric()),
                "{name}"
            );
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
        }
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes() {
        assert!(is_label_value("infra"));
        assert!(is_label_value(""));
        assert!(is_label_value("a.b_c-1"));
        assert!(!is_label_value("-a"));
        assert!(!is_label_value("a b"));
        assert!(!is_label_value(&"x".repeat(64)));
        assert!(!is_label_value("sha256:abc"));
        assert!(is_label_key("team"));
        assert!(is_label_key("io.lanectl/lane"));
        assert!(!is_label_key("Io.x/lane"));
        assert!(!is_label_key("a/b/c"));
        assert!(!is_label_key(""));
        assert!(!is_label_key("io.x/"));
    }

    #[test]
    fn dollars_are_doubled_so_that_kubernetes_expands_nothing() {
        assert_eq!(no_expansion("echo $$ $(HOME) $5"), "echo $$$$ $$(HOME) $$5");
        assert_eq!(no_expansion("plain"), "plain");
        assert_eq!(no_expansions(&["$(A)".into(), "b".into()]), ["$$(A)", "b"]);
    }

    #[test]
    fn env_names_are_portable_relaxed_or_refused() {
        for name in ["A", "a_b", "X.Y-Z", "_1"] {
            assert_eq!(env_name(name), EnvName::Portable, "{name}");
        }
        for name in ["1X", "A B", "a:b", "a/b"] {
            assert_eq!(env_name(name), EnvName::Relaxed, "{name}");
        }
        for name in ["", "é", "a\tb", "a=b"] {
            assert_eq!(env_name(name), EnvName::Refused, "{name:?}");
        }
    }

    #[test]
    fn secret_keys_are_numbered_file_names_in_the_allowed_alphabet() {
        assert_eq!(secret_key(0, "config.toml"), "0000-config.toml");
        assert_eq!(secret_key(12, "sub/dir/a b+c"), "0012-a_b_c");
        let key = secret_key(3, "é/ü");
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{key}"
        );
    }
}
