//! The CLI's side of the daemon API: a small HTTP/1.1 client (hyper) that sends JSON with
//! the bearer token and reads JSON back.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server address '{0}': use http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the coxswain daemon at {addr}: {source} (is `coxswain run` running with --listen?)")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon: {0}")]
    Http(String),
    /// A body that is not JSON: a proxy's error page, or not a coxswain daemon.
    #[error("the daemon answered {status} with a body that is not JSON (a proxy in between, or not a coxswain daemon?): {excerpt}")]
    NotJson { status: u16, excerpt: String },
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
}

pub struct Client {
    host: String,
    port: u16,
    token: String,
    /// Set for https:// servers.
    tls: Option<tokio_rustls::TlsConnector>,
}

/// Longest one request may take (long polls wait up to 25 s on the server).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);

impl Client {
    pub fn new(server: &str, token: &str) -> Result<Client, ClientError> {
        Self::with_ca(server, token, None)
    }

    /// `https://` servers are checked against `ca_file` (PEM) or the system's roots.
    pub fn with_ca(
        server: &str,
        token: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Client, ClientError> {
        let (rest, tls) = if let Some(r) = server.strip_prefix("https://") {
            let c = crate::tls::connector(ca_file).map_err(ClientError::Http)?;
            (r, Some(c))
        } else if let Some(r) = server.strip_prefix("http://") {
            (r, None)
        } else {
            return Err(ClientError::BadUrl(server.into()));
        };
        let hostport = rest.split('/').next().unwrap_or_default();
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| p.parse::<u16>().ok().map(|p| (h.to_string(), p)))
            .ok_or_else(|| ClientError::BadUrl(server.into()))?;
        Ok(Client {
            host,
            port,
            token: token.to_string(),
            tls,
        })
    }

    /// Send a request; returns the status and the JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|_| ClientError::Timeout(REQUEST_TIMEOUT))?
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let addr = format!("{}:{}", self.host, self.port);
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map(NoSigpipe)
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b)
                .map_err(|e| ClientError::Http(format!("cannot encode the request: {e}")))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.as_str())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = crate::tls::server_name(&self.host).map_err(ClientError::Http)?;
                let stream = tls.connect(name, stream).await.map_err(|e| {
                    ClientError::Http(format!(
                        "TLS: {e} (a daemon without --tls-cert serves plain http://)"
                    ))
                })?;
                send(stream, req).await?
            }
            None => send(stream, req).await?,
        };
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, parse_body(status, &body)?))
    }
}

/// A TCP stream that never writes with `writev`. The CLI's printing commands restore the
/// default SIGPIPE (so `history | head` ends quietly), and `writev` on a socket the peer
/// closed raises it: the CLI died with 141 and no word (TLS to a plain-HTTP daemon).
/// Plain writes go through `send` with `MSG_NOSIGNAL` (Rust's std does that on Linux), so
/// a closed peer is an error the CLI reports, with its exit code.
struct NoSigpipe(tokio::net::TcpStream);

impl tokio::io::AsyncRead for NoSigpipe {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for NoSigpipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// An answer body as JSON (`Null` when empty). Not JSON: the status and the start of
/// the body, so an operator can tell a proxy's 502 from a 404.
fn parse_body(status: u16, body: &[u8]) -> Result<serde_json::Value, ClientError> {
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(body).map_err(|_| ClientError::NotJson {
        status,
        excerpt: String::from_utf8_lossy(body).chars().take(200).collect(),
    })
}

/// One request over an open connection (plain or TLS).
pub(crate) async fn send<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, ClientError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}
