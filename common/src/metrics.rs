//! A minimal Prometheus scrape endpoint: `GET /metrics` answers whatever `render` returns in
//! the text exposition format. Scrapes are rare and small, so one task per connection and no
//! HTTP library is enough.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest request head accepted; a scrape sends a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Binds `addr` and serves until `stop`; returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, render: Render, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(url = %format_args!("http://{bound}/metrics"), "serving metrics");
    tokio::spawn(async move {
        loop {
            let (socket, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::debug!(%error, "metrics accept failed");
                        continue;
                    }
                },
            };
            let render = Arc::clone(&render);
            tokio::spawn(async move {
                if tokio::time::timeout(REQUEST_TIMEOUT, answer(socket, render))
                    .await
                    .is_err()
                {
                    tracing::debug!("metrics request timed out");
                }
            });
        }
    });
    Ok(bound)
}

/// `GET /metrics` from a Prometheus endpoint (this one or any other); the body.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        Some((head, _)) => Err(std::io::Error::other(format!("metrics answered `{head}`"))),
        None => Err(std::io::Error::other("no HTTP head in the metrics response")),
    }
}

async fn answer(mut socket: tokio::net::TcpStream, render: Render) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = socket.read(&mut chunk).await?;
        if read == 0 || request.len() + read > MAX_REQUEST_BYTES {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..read]);
    }
    let head = String::from_utf8_lossy(&request);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
        ("200 OK", render())
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scrapes_get_the_rendered_text_and_other_paths_404() {
        let stop = CancellationToken::new();
        let bound = serve(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(|| "up 1\n".to_owned()),
            stop.clone(),
        )
        .await
        .expect("bind");
        let fetch = |path: &'static str| async move {
            let mut socket = tokio::net::TcpStream::connect(bound).await.expect("connect");
            socket
                .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut response = String::new();
            socket.read_to_string(&mut response).await.expect("read");
            response
        };
        let metrics = fetch("/metrics").await;
        assert!(
            metrics.starts_with("HTTP/1.1 200") && metrics.ends_with("up 1\n"),
            "{metrics}"
        );
        assert!(fetch("/").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
