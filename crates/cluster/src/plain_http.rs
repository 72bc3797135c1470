//! One plain-HTTP/1.1 request to a local component (health endpoints, moto's API), through
//! hyper's HTTP/1 connection: no pool, no TLS, no proxy, a deadline on the whole exchange.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A response: the status code and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` with `headers` and `body` to `authority` (`host:port`, also the `Host`
/// header) and reads the whole answer, failing once `timeout` has passed.
pub async fn request(
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    let exchange = async {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let req = builder
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(invalid_input)?;
        let stream = tokio::net::TcpStream::connect(authority).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        // Drives the connection until the response is read; dropped with this future.
        let connection = tokio::spawn(connection);
        let result = async {
            let response = sender
                .send_request(req)
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(std::io::Error::other)?
                .to_bytes();
            Ok(Response { status, body })
        }
        .await;
        connection.abort();
        result
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{method} http://{authority}{path}: no answer within {timeout:?}"),
            ))
        })
}

/// `GET path` at `authority`, within two seconds, as components' health checks are polled.
pub async fn get(authority: &str, path: &str) -> std::io::Result<Response> {
    request(authority, "GET", path, &[], "", Duration::from_secs(2)).await
}

fn invalid_input(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection server answering `answer` and handing back what it was sent.
    async fn serve_once(
        answer: &'static [u8],
    ) -> std::io::Result<(String, tokio::task::JoinHandle<std::io::Result<String>>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            // Up to the end of the headers and the 5-byte body sent by the test.
            while !String::from_utf8_lossy(&seen).contains("\r\n\r\nhello") {
                let n = socket.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            socket.write_all(answer).await?;
            Ok(String::from_utf8_lossy(&seen).into_owned())
        });
        Ok((addr, server))
    }

    #[tokio::test]
    async fn sends_the_request_and_reads_status_and_body() -> Result<(), Box<dyn std::error::Error>>
    {
        let (addr, server) =
            serve_once(b"HTTP/1.1 201 Created\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n").await?;
        let response = request(
            &addr,
            "POST",
            "/moto-api/reset?x=1",
            &[("X-Amz-Target", "Secrets.Get")],
            "hello",
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(response.status, 201);
        assert_eq!(response.text(), "{\"a\": 1}\n");
        let seen = server.await??.to_lowercase();
        assert!(
            seen.starts_with("post /moto-api/reset?x=1 http/1.1\r\n"),
            "{seen}"
        );
        assert!(seen.contains(&format!("host: {addr}\r\n")), "{seen}");
        assert!(seen.contains("x-amz-target: secrets.get\r\n"), "{seen}");
        assert!(seen.contains("content-length: 5\r\n"), "{seen}");
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_server_times_out() -> Result<(), Box<dyn std::error::Error>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let err = request(&addr, "GET", "/", &[], "", Duration::from_millis(200))
            .await
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(std::io::ErrorKind::TimedOut));
        drop(listener);
        Ok(())
    }

    #[tokio::test]
    async fn not_http_is_an_error() -> Result<(), Box<dyn std::error::Error>> {
        let (addr, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n").await?;
        let result = request(&addr, "GET", "/", &[], "hello", Duration::from_secs(5)).await;
        assert!(result.is_err(), "{result:?}");
        Ok(())
    }
}
