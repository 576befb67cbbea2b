//! HTTP readiness: `GET path` on 127.0.0.1 at the published host port until a
//! 2xx answer or the timeout. A deliberately small HTTP/1.0 client: one
//! request, the status line read, the connection dropped.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for one attempt, so a hung server does not eat the budget.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes until ready; the error names the URL and the last failure.
pub async fn wait_ready(
    host_port: u16,
    path: &str,
    budget: Duration,
    interval: Duration,
) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{host_port}{path}");
    let deadline = Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match timeout(left.min(ATTEMPT_TIMEOUT), attempt(host_port, path)).await {
            Ok(Ok(code)) if (200..300).contains(&code) => return Ok(()),
            Ok(Ok(code)) => format!("answered {code}"),
            Ok(Err(e)) => e,
            Err(_) => "no answer in time".to_string(),
        };
        if Instant::now() + interval >= deadline {
            return Err(format!(
                "probe {url} not ready after {}: {last}",
                humantime::format_duration(budget)
            ));
        }
        sleep(interval).await;
    }
}

/// One attempt (at most ATTEMPT_TIMEOUT): whether it answered 2xx.
pub async fn once(host_port: u16, path: &str) -> bool {
    matches!(
        timeout(ATTEMPT_TIMEOUT, attempt(host_port, path)).await,
        Ok(Ok(code)) if (200..300).contains(&code)
    )
}

/// One GET; returns the status code.
async fn attempt(port: u16, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: lanectl\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    head.split_whitespace()
        .nth(1)
        .filter(|_| head.starts_with("HTTP/"))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn server(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn a_2xx_answer_is_ready() {
        let port = server("HTTP/1.1 204 No Content\r\n\r\n").await;
        wait_ready(port, "/", Duration::from_secs(2), Duration::from_millis(10))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_500_answer_fails_with_the_code_after_the_timeout() {
        let port = server("HTTP/1.1 500 Oops\r\n\r\n").await;
        let err = wait_ready(
            port,
            "/x",
            Duration::from_millis(300),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(err.contains("answered 500") && err.contains("/x"), "{err}");
    }

    #[tokio::test]
    async fn nothing_listening_fails_with_connect() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = wait_ready(
            port,
            "/",
            Duration::from_millis(200),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }
}
