//! A minimal JSON client of shelf's API: over HTTP (hyper), or straight into a router
//! (for tests). The demo's simulated users and the load generator use it.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;

/// Sends one JSON request and returns the status and the parsed JSON body (`Null` when the
/// body is empty or not JSON).
pub trait Transport: Send + Sync {
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> impl Future<Output = anyhow::Result<(StatusCode, serde_json::Value)>> + Send;
}

/// HTTP/1.1 to a running server, with keep-alive connections. Every call has a deadline
/// (connect 10 s; the whole call [`HttpTransport::DEFAULT_TIMEOUT`] unless set otherwise), so
/// a peer that stops answering fails the call instead of hanging it.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    base: String,
    api_key: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: std::time::Duration,
}

impl HttpTransport {
    pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    /// `base` like `http://127.0.0.1:8080`.
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        Self {
            base: base.trim_end_matches('/').to_string(),
            api_key,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// The same transport with another deadline per call.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `GET path`'s body as text (for `/metrics`); an error unless the status is 200.
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let (status, bytes) = self.send(Method::GET, path, None).await?;
        anyhow::ensure!(status == StatusCode::OK, "GET {path}: {status}");
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// One request with the deadline: the status and the whole body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let uri = format!("{}{path}", self.base);
        let req = request(method.clone(), &uri, self.api_key.as_deref(), body)?;
        let call = async {
            let response = self.client.request(req).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| anyhow::anyhow!("{method} {uri}: no answer within {:?}", self.timeout))?
    }
}

fn request(
    method: Method,
    uri: &str,
    api_key: Option<&str>,
    body: Option<serde_json::Value>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(key) = api_key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    let bytes = match body {
        Some(v) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(serde_json::to_vec(&v)?)
        }
        None => Bytes::new(),
    };
    Ok(builder.body(Full::new(bytes))?)
}

fn parse_body(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or(serde_json::Value::Null)
}

impl Transport for HttpTransport {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let (status, bytes) = self.send(method, path, body).await?;
        Ok((status, parse_body(&bytes)))
    }
}

/// Calls an axum router in-process (no socket).
#[derive(Clone, Debug)]
pub struct RouterTransport {
    pub router: axum::Router,
    pub api_key: Option<String>,
}

impl Transport for RouterTransport {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        use tower::ServiceExt;
        let req = request(method, path, self.api_key.as_deref(), body)?.map(Body::new);
        let response = self.router.clone().oneshot(req).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, parse_body(&bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_that_never_answers_fails_the_call_at_its_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads nothing, answers nothing.
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let api = HttpTransport::new(&format!("http://{addr}"), None)
            .with_timeout(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = api.call(Method::GET, "/ready", None).await.unwrap_err();
        assert!(e.to_string().contains("no answer within"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
