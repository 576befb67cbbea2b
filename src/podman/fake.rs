//! A fake Podman on a unix socket, for the adapter's tests.

use std::time::Duration;

/// Accepts one connection, reads a request, waits `delay`, then plays
/// `answer` (nothing for `None`) and keeps the connection open, as a quiet
/// stream does. Returns the socket's directory (keep it) and its URL.
pub(super) async fn podman(answer: Option<String>, delay: Duration) -> (tempfile::TempDir, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("podman.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        tokio::time::sleep(delay).await;
        if let Some(answer) = answer {
            conn.write_all(answer.as_bytes()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    (dir, format!("unix://{}", socket.display()))
}
