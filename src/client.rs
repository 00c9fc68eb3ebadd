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
    #[error("the daemon's answer is not JSON: {0}")]
    Json(#[from] serde_json::Error),
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
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let bytes = match body {
            Some(b) => serde_json::to_vec(b)?,
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
                let stream = tls
                    .connect(name, stream)
                    .await
                    .map_err(|e| ClientError::Http(format!("TLS: {e}")))?;
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
        let json = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body)?
        };
        Ok((status, json))
    }
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
