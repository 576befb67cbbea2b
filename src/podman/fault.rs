//! Faults: timeouts on podman-api calls, and HTTP statuses and Podman's error text
//! mapped to [`PodmanError`].

use std::time::Duration;

use super::PodmanError;
use crate::container::short;

/// A podman-api call that gives up after `limit`.
pub(super) async fn bounded<T>(
    operation: &'static str,
    limit: Duration,
    call: impl std::future::Future<Output = podman_api::Result<T>>,
) -> podman_api::Result<T> {
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(limit, call).await;
    crate::metrics::podman_request(operation, started.elapsed());
    match answer {
        Ok(result) => result,
        Err(_) => Err(podman_api::Error::IO(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {}", humantime::format_duration(limit)),
        ))),
    }
}

pub(super) fn status(e: &podman_api::Error) -> Option<u16> {
    match e {
        podman_api::Error::Fault { code, .. } => Some(code.as_u16()),
        _ => None,
    }
}

/// Podman's error text. podman-api renders it as "message: cause", and Podman's message
/// usually ends with the cause already: drop the repetition.
pub(super) fn fault_message(e: &podman_api::Error) -> String {
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

pub(super) fn api_error(call: String, e: podman_api::Error) -> PodmanError {
    PodmanError::api(call, fault_message(&e))
}

/// The result of a state change: 304 means it already was so, 404 gives `absent`.
pub(super) fn settle(
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

pub(super) fn not_found(id: &str) -> PodmanError {
    let what = format!("container {}", short(id));
    PodmanError::NotFound { what }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
