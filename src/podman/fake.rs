//! A fake Podman on a unix socket, for the adapter's tests.

use std::time::Duration;

/// Accepts one connection, reads a request, waits `delay`, then plays
/// `answer` (nothing for `None`) and keeps the connection open, as a quiet
/// stream does. Returns the socket's directory (keep it) and its URL.
pub(super) async fn podman(
    answer: Option<String>,
    delay: Duration,
) -> std::io::Result<(tempfile::TempDir, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("podman.sock");
    let listener = tokio::net::UnixListener::bind(&socket)?;
    tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else {
            return; // the test sees no answer, and says so
        };
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf).await;
        tokio::time::sleep(delay).await;
        if let Some(answer) = answer {
            let _ = conn.write_all(answer.as_bytes()).await;
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    Ok((dir, format!("unix://{}", socket.display())))
}
