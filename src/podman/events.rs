//! The event stream: `GET /events` followed over hyper, one event per JSON line.

use std::time::Duration;

use super::{Podman, PodmanError};
use crate::container::{ContainerEvent, StreamItem};
use crate::labels::{INSTANCE as INSTANCE_LABEL, LANE as LANE_LABEL};

impl Podman {
    /// Container events of this instance's containers, as they happen, from
    /// `since` on when given (Podman replays the ones already logged). The
    /// stream first yields [`StreamItem::Connected`] once Podman has answered
    /// the request (not before: events before that moment may be missed),
    /// then the events. The channel closes when the stream ends (Podman
    /// restarted, socket gone) or fails; the caller reconnects.
    pub fn events(
        &self,
        instance: &str,
        since: Option<std::time::SystemTime>,
    ) -> tokio::sync::mpsc::Receiver<StreamItem> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let url = self.url.clone();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            if let Err(e) = follow_events(&url, &instance, since, &tx).await {
                let _ = tx.send(StreamItem::Failed(e.to_string())).await;
            }
        });
        rx
    }
}

/// Longest wait for Podman to answer an events request with its headers.
const EVENTS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An event line longer than this is not Podman's.
const MAX_EVENT_LINE: usize = 1 << 20;

/// Follows `GET /events` over hyper directly (podman-api's stream does not
/// say when Podman has answered): `Connected` after the response headers,
/// then one event per JSON line.
async fn follow_events(
    url: &str,
    instance: &str,
    since: Option<std::time::SystemTime>,
    tx: &tokio::sync::mpsc::Sender<StreamItem>,
) -> Result<(), PodmanError> {
    use hyper::body::HttpBody;
    let call = || "follow events".to_string();
    let filters = serde_json::json!({
        "type": ["container"],
        "label": [format!("{INSTANCE_LABEL}={instance}")],
    });
    let mut query = format!(
        "stream=true&filters={}",
        percent_encode(&filters.to_string())
    );
    if let Some(since) = since {
        let since = humantime::format_rfc3339_nanos(since).to_string();
        query.push_str(&format!("&since={}", percent_encode(&since)));
    }
    let path = format!("/v4.0.0/libpod/events?{query}");
    let response = match tokio::time::timeout(EVENTS_CONNECT_TIMEOUT, http_get(url, &path)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(PodmanError::api(call(), e)),
        Err(_) => {
            let message = format!("no answer within {EVENTS_CONNECT_TIMEOUT:?}");
            return Err(PodmanError::api(call(), message));
        }
    };
    if response.status() != hyper::StatusCode::OK {
        let message = format!("answered {}", response.status());
        return Err(PodmanError::api(call(), message));
    }
    if tx.send(StreamItem::Connected).await.is_err() {
        return Ok(());
    }
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // The follower gone (it renews the stream, or shuts down): end now,
        // not at the next event, which may never come.
        let chunk = tokio::select! {
            () = tx.closed() => return Ok(()),
            chunk = body.data() => chunk,
        };
        let Some(chunk) = chunk else { break };
        let chunk = chunk.map_err(|e| PodmanError::api(call(), e.to_string()))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(event) = parse_event(&line, instance) else {
                continue;
            };
            if tx.send(StreamItem::Event(event)).await.is_err() {
                return Ok(());
            }
        }
        if pending.len() > MAX_EVENT_LINE {
            return Err(PodmanError::api(call(), "an event line is too long"));
        }
    }
    Ok(())
}

/// One line of the event stream, if it is an event of this instance.
fn parse_event(line: &[u8], instance: &str) -> Option<ContainerEvent> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let e: podman_api::models::Event = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => {
            // Not the error's text: it can quote a label value.
            tracing::debug!(
                bytes = line.len(),
                column = e.column(),
                "skipping an event line that does not parse"
            );
            return None;
        }
    };
    // Another instance's event (the filter is a hint): not ours.
    if e.actor.attributes.get(INSTANCE_LABEL).map(String::as_str) != Some(instance) {
        return None;
    }
    let attribute = |key: &str| e.actor.attributes.get(key).map(String::as_str);
    // (A lane whose own container_name ends in `.next` looks the same once
    // swapped: its events then wait for the resync.)
    let rollout = attribute(crate::labels::ROLE) == Some("next")
        && attribute("name").is_some_and(|n| n.ends_with(".next"));
    Some(ContainerEvent {
        lane: e.actor.attributes.get(LANE_LABEL).cloned(),
        action: e.action,
        id: e.actor.id,
        rollout,
        time: e.time_nano.into(),
    })
}

/// A GET on Podman's API outside podman-api (for the event stream).
async fn http_get(url: &str, path: &str) -> Result<hyper::Response<hyper::Body>, String> {
    let answer = if let Some(socket) = url.strip_prefix("unix://") {
        let client = hyper::Client::builder().build::<_, hyper::Body>(hyperlocal::UnixConnector);
        client.get(hyperlocal::Uri::new(socket, path).into()).await
    } else {
        let host = url
            .strip_prefix("tcp://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("cannot follow events at {url}: not a unix:// or tcp:// URL"))?;
        let uri = format!("http://{host}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        hyper::Client::new().get(uri).await
    };
    answer.map_err(|e| e.to_string())
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"Type":"container","Action":"died","Actor":{"ID":"abc","Attributes":{"io.lanectl.instance":"me","io.lanectl.lane":"a"}},"time":1764000000,"timeNano":1764000000123456789}"#;

    #[test]
    fn an_event_line_of_this_instance_becomes_a_trigger() {
        let e = parse_event(EVENT.as_bytes(), "me").expect("ours");
        assert_eq!(
            (e.lane.as_deref(), e.action.as_str(), e.id.as_str()),
            (Some("a"), "died", "abc")
        );
        let nanos = e
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        assert_eq!(nanos, 1_764_000_000_123_456_789);
        assert!(
            parse_event(EVENT.as_bytes(), "other").is_none(),
            "another instance"
        );
        assert!(parse_event(b"not json\n", "me").is_none());
        assert!(parse_event(b"  \n", "me").is_none());
    }

    #[test]
    fn a_query_value_is_percent_encoded() {
        assert_eq!(
            percent_encode(r#"{"a":["b=c"]}"#),
            "%7B%22a%22%3A%5B%22b%3Dc%22%5D%7D"
        );
        assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
    }

    async fn fake_events(answer: Option<String>) -> (tempfile::TempDir, String) {
        super::super::fake::podman(answer, Duration::ZERO)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_stream_counts_as_connected_only_once_podman_answered() {
        let (_dir, url) = fake_events(None).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let first = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(first.is_err(), "connected before any answer: {first:?}");

        let line = format!("{EVENT}\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{line}\r\n",
            line.len()
        );
        let (_dir, url) = fake_events(Some(answer)).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let mut items = Vec::new();
        for _ in 0..2 {
            let item = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            let item = item.expect("in time").expect("open");
            assert!(!matches!(item, StreamItem::Failed(_)), "{item:?}");
            items.push(item);
        }
        assert_eq!(items[0], StreamItem::Connected);
        assert!(matches!(&items[1], StreamItem::Event(e) if e.action == "died"));
    }

    #[tokio::test]
    async fn the_stream_ends_when_its_follower_is_gone_even_if_podman_is_quiet() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string();
        let (_dir, url) = fake_events(Some(answer)).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let task = tokio::spawn(async move { follow_events(&url, "me", None, &tx).await });
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(first, Ok(Some(StreamItem::Connected))),
            "{first:?}"
        );
        drop(rx);
        let ended = tokio::time::timeout(Duration::from_secs(2), task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "still following: {ended:?}"
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_an_error_not_a_connection() {
        let (_dir, url) = fake_events(Some(
            "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".into(),
        ))
        .await;
        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let result = follow_events(&url, "me", None, &tx).await;
        assert!(result.is_err_and(|e| e.to_string().contains("500")));
    }
}
