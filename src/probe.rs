//! HTTP readiness: `GET path` at the address the port is published on
//! (127.0.0.1 for every IPv4 address, `::1` for every IPv6 one) until a 2xx
//! answer or the timeout. A deliberately small HTTP/1.0 client: one
//! request, the status line read, the connection dropped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// Longest wait for one attempt, so a hung server does not eat the budget.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Probes until ready; the error names the URL and the last failure.
pub async fn wait_ready(
    addr: SocketAddr,
    path: &str,
    budget: Duration,
    interval: Duration,
) -> Result<(), String> {
    let url = format!("http://{addr}{path}");
    let deadline = Instant::now() + budget;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let last = match timeout(left.min(ATTEMPT_TIMEOUT), attempt(addr, path)).await {
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
pub async fn once(addr: SocketAddr, path: &str) -> bool {
    matches!(
        timeout(ATTEMPT_TIMEOUT, attempt(addr, path)).await,
        Ok(Ok(code)) if (200..300).contains(&code)
    )
}

/// One GET; returns the status code.
async fn attempt(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: lanectl\r\n\r\n");
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

    async fn server_on(ip: &str, answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        port
    }

    async fn server(answer: &'static str) -> SocketAddr {
        server_on("127.0.0.1", answer).await
    }

    #[tokio::test]
    async fn the_probe_goes_to_the_address_given() {
        let addr = server_on("127.0.0.2", "HTTP/1.1 200 OK\r\n\r\n").await;
        assert!(once(addr, "/").await, "{addr}");
        let elsewhere = SocketAddr::new([127, 0, 0, 1].into(), addr.port());
        assert!(
            !once(elsewhere, "/").await,
            "nothing listens on {elsewhere}"
        );
        // IPv6 where the host has it.
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            let addr = server_on("::1", "HTTP/1.1 200 OK\r\n\r\n").await;
            assert!(once(addr, "/").await, "{addr}");
        }
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
            l.local_addr().unwrap()
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
