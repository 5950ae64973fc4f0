//! A small client of the gateway for `icnctl`: the runbook's challenge →
//! sign → verify flow, and JSON requests with the token.

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use icn_engine::Keypair;
use serde_json::{Value, json};

/// Default gateway, as `icnd` binds it.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// A request's body.
enum Payload {
    /// JSON.
    Json(Value),
    /// Bytes of a content type.
    Raw(String, Vec<u8>),
}

/// A gateway at a base URL, with a token once logged in.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[error("{status} {error}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The status's name, from the body.
    pub error: String,
    /// The gateway's explanation.
    pub message: String,
}

/// What [`Client::ledger_heads`] answers.
#[derive(Debug, Clone)]
pub struct LedgerHeads {
    /// The co-op's document id.
    pub coop: icn_schemas::DocId,
    /// The co-op document's heads.
    pub coop_heads: Vec<[u8; 32]>,
    /// The ledger's heads.
    pub ledger_heads: Vec<icn_schemas::ledger::EntryId>,
}

impl Client {
    /// A client of the gateway at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Client> {
        // reqwest uses rustls; this process picks ring, which iroh uses too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: None,
        })
    }

    /// Uses `token` for the requests that follow.
    pub fn with_token(mut self, token: String) -> Client {
        self.token = Some(token);
        self
    }

    /// Logs in as `key`: asks a challenge, signs it, verifies it. Returns
    /// the gateway's answer (`token`, `expires_at`, …) and keeps the token.
    pub async fn login(&mut self, key: &Keypair) -> Result<Value> {
        self.login_for(key, None).await
    }

    /// Logs in for `member` with `key`, one of the member's registered
    /// devices (`key`'s own DID when `member` is `None`).
    pub async fn login_for(&mut self, key: &Keypair, member: Option<&str>) -> Result<Value> {
        let device = key.did().to_string();
        let did = member.map_or_else(|| device.clone(), str::to_owned);
        let mut ask = json!({ "did": did });
        if member.is_some() {
            ask["device"] = json!(device);
        }
        let challenge = self.call("POST", "/v1/auth/challenge", Some(ask)).await?;
        let challenge = challenge["challenge"]
            .as_str()
            .ok_or_else(|| anyhow!("the gateway answered no challenge"))?;
        let signature =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(key.sign(challenge.as_bytes()));
        let verified = self
            .call(
                "POST",
                "/v1/auth/verify",
                Some(json!({ "did": did, "challenge": challenge, "signature": signature })),
            )
            .await?;
        let token = verified["token"]
            .as_str()
            .ok_or_else(|| anyhow!("the gateway answered no token"))?;
        self.token = Some(token.to_owned());
        Ok(verified)
    }

    /// One request; the JSON answer, or the gateway's error.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        self.send(method, path, body.map(Payload::Json), None).await
    }

    /// `GET path` of a list, following `next_cursor` to its end: every item
    /// of every page, as one page (`{items, next_cursor: null}`). An answer
    /// that is not a page is answered as it is.
    pub async fn list(&self, path: &str) -> Result<Value> {
        let mut page = self.call("GET", path, None).await?;
        let mut items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => return Ok(page),
        };
        let join = if path.contains('?') { '&' } else { '?' };
        // A list that changes under the walk could hand back a cursor it
        // handed before; at most this many pages are followed.
        for _ in 0..10_000 {
            let Some(cursor) = page["next_cursor"].as_str().map(str::to_owned) else {
                break;
            };
            let cursor: String = form_urlencoded::byte_serialize(cursor.as_bytes()).collect();
            page = self
                .call("GET", &format!("{path}{join}cursor={cursor}"), None)
                .await?;
            match page.get_mut("items").map(Value::take) {
                Some(Value::Array(more)) => items.extend(more),
                _ => anyhow::bail!("page after page, {path} answered something not a page"),
            }
        }
        Ok(serde_json::json!({"items": items, "next_cursor": null}))
    }

    /// What an entry signed on this client's side cites: the co-op's
    /// document id, and the co-op heads and ledger heads the node names now
    /// (`GET /v1/ledger/{coop}/heads`).
    pub async fn ledger_heads(&self, coop: &str) -> Result<LedgerHeads> {
        use icn_schemas::ledger::EntryId;
        let heads = self
            .call("GET", &format!("/v1/ledger/{coop}/heads"), None)
            .await?;
        let hashes = |field: &str| -> Result<Vec<[u8; 32]>> {
            heads[field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|h| {
                    let h = h.as_str().unwrap_or_default();
                    h.parse::<EntryId>()
                        .map(|id| id.0)
                        .map_err(|_| anyhow!("the gateway named a head {h:?} that is not a hash"))
                })
                .collect()
        };
        Ok(LedgerHeads {
            coop: heads["coop_doc_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .context("the gateway named no co-op document id")?,
            coop_heads: hashes("coop_heads")?,
            ledger_heads: hashes("ledger_heads")?.into_iter().map(EntryId).collect(),
        })
    }

    /// [`Client::call`] with an `Idempotency-Key`: sent again, the same
    /// request writes nothing twice.
    pub async fn call_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: &str,
    ) -> Result<Value> {
        self.send(method, path, body.map(Payload::Json), Some(key))
            .await
    }

    /// `POST path` with `bytes` as the body, of `content_type` (a module,
    /// say); the answer is JSON.
    pub async fn upload(&self, path: &str, content_type: &str, bytes: Vec<u8>) -> Result<Value> {
        self.send(
            "POST",
            path,
            Some(Payload::Raw(content_type.to_owned(), bytes)),
            None,
        )
        .await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let method: reqwest::Method = method.parse().context("HTTP method")?;
        let mut request = self.http.request(method, &url);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        match body {
            None => {}
            Some(Payload::Json(body)) => {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            Some(Payload::Raw(content_type, bytes)) => {
                request = request.header("content-type", content_type).body(bytes);
            }
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{url} answered {status} with something not JSON"))?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(ApiError {
                status: status.as_u16(),
                error: value["error"]
                    .as_str()
                    .unwrap_or(status.canonical_reason().unwrap_or("Error"))
                    .to_owned(),
                message: value["message"].as_str().unwrap_or(&text).to_owned(),
            }
            .into())
        }
    }
}
