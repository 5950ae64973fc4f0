//! What the gateway's tests share: a gateway on a real engine (sled on a
//! temporary directory), requests through its router, the runbook's login.

#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use icn_engine::Keypair;
use icn_engine::test_utils::{TestNode, keypair};
use icn_gateway::{Config, Gateway};
use serde_json::{Value, json};
use tower::ServiceExt;

pub struct Api {
    pub node: TestNode,
    pub gateway: Gateway,
    pub node_key: Keypair,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.bytes))
        })
    }

    /// Asserts the status and, for errors, the API's error shape.
    pub fn expect(self, status: u16) -> Value {
        let body = if self.bytes.is_empty() {
            Value::Null
        } else {
            self.json()
        };
        assert_eq!(self.status.as_u16(), status, "body: {body}");
        if status >= 400 {
            assert!(
                body["error"].is_string() && body["message"].is_string(),
                "{body}"
            );
        }
        body
    }
}

pub fn config(node_key: &Keypair) -> Config {
    Config::new(node_key.clone(), b"test secret".to_vec())
}

impl Api {
    pub fn new() -> Api {
        Api::with(config(&keypair(100)))
    }

    pub fn with(config: Config) -> Api {
        let node = TestNode::new();
        let node_key = config.node.clone();
        let gateway = Gateway::new(node.engine.clone(), config);
        Api {
            node,
            gateway,
            node_key,
        }
    }

    /// Drops the gateway and the engine, and opens both again on the same
    /// data directory.
    pub fn restart(self) -> Api {
        let Api {
            node,
            gateway,
            node_key,
        } = self;
        drop(gateway);
        let node = node.reopen();
        let gateway = Gateway::new(node.engine.clone(), config(&node_key));
        Api {
            node,
            gateway,
            node_key,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        }
        .expect("request");
        self.send(req).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = self
            .gateway
            .router()
            .oneshot(req)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("body")
            .to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// The runbook's manual flow: challenge, sign, verify.
    pub async fn login_with(&self, key: &Keypair, scopes: Option<&[&str]>) -> String {
        let mut req = json!({"did": key.did().to_string()});
        if let Some(s) = scopes {
            req["scopes"] = json!(s);
        }
        let c = self
            .call("POST", "/v1/auth/challenge", None, Some(req))
            .await
            .expect(200);
        let challenge = c["challenge"].as_str().expect("challenge");
        assert!(c["expires_at"].as_str().is_some_and(|e| e.ends_with('Z')));
        let sig = base64_no_pad(&key.sign(challenge.as_bytes()));
        let v = self
            .call(
                "POST",
                "/v1/auth/verify",
                None,
                Some(
                    json!({"did": key.did().to_string(), "challenge": challenge, "signature": sig}),
                ),
            )
            .await
            .expect(200);
        v["token"].as_str().expect("token").to_owned()
    }

    pub async fn login(&self, key: &Keypair) -> String {
        self.login_with(key, None).await
    }

    /// A device's login for `member`: the challenge names the device, which
    /// signs it. The verify reply, whatever its status.
    pub async fn device_login(&self, member: &str, key: &Keypair) -> Reply {
        let c = self
            .call(
                "POST",
                "/v1/auth/challenge",
                None,
                Some(json!({"did": member, "device": key.did().to_string()})),
            )
            .await
            .expect(200);
        let challenge = c["challenge"].as_str().expect("challenge").to_owned();
        let sig = base64_no_pad(&key.sign(challenge.as_bytes()));
        self.call(
            "POST",
            "/v1/auth/verify",
            None,
            Some(json!({"did": member, "challenge": challenge, "signature": sig})),
        )
        .await
    }
}

pub fn base64_no_pad(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

impl Api {
    /// Serves the gateway on a loopback port until the returned server is
    /// stopped.
    pub async fn serve(&self) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(icn_gateway::serve(
            listener,
            self.gateway.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Server { addr, stop, task }
    }
}

/// A gateway served on loopback.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Stops serving once the connections in flight close.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
