//! `GET /v1/ws/{coop_id}`: a co-op's events, live and from any `seq`.
//!
//! ```text
//! client: {"type": "Auth", "token": "<jwt>"}
//! server: {"type": "AuthOk", "did": "did:icn:…", "coop_id": "…", "last_seq": 41}
//!      or {"type": "AuthError", "message": "…"}, then closes
//! server: {"type": "Event", "seq": 42, "event": "SettlementCreated", "at": …, "data": {…}}
//! client: {"type": "Backfill", "after_seq": 30}
//! server: the events 31…, then {"type": "BackfillDone", "last_seq": 41, "through": 41, "more": false}
//!         (`last_seq`: the log's last; `through`: the last this answer sent)
//! ```
//!
//! The client authenticates within [`AUTH_SECONDS`] with a token that
//! grants `coop:read` for a member of the co-op. Live events are sent as
//! they are logged; a client that falls behind is sent what it missed
//! from the log, in order, never twice.

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use icn_schemas::{DocId, DocKind, Scope};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::{Gateway, auth};

/// How long a new connection has to send its `Auth`.
pub(crate) const AUTH_SECONDS: u64 = 10;

/// Events sent per `Backfill` answer; `more` says when there are more.
const BACKFILL_LIMIT: usize = 1000;

/// Largest message a client may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

#[utoipa::path(
    get,
    path = "/v1/ws/{coop_id}",
    tag = "events",
    params(("coop_id" = String, Path, pattern = "^([a-z0-9][a-z0-9._:-]{0,63}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description = "The co-op's id, or its document id")),
    responses((status = 101, description = "WebSocket: send {\"type\": \"Auth\", \"token\"}; receive AuthOk or AuthError, then Event {seq, event, at, data}; send {\"type\": \"Backfill\", \"after_seq\"} for logged events, answered by BackfillDone. Events: SettlementCreated, LedgerEntryRecorded, EntryStatusChanged (an entry's status changed after the fact), MemberAdded, MemberRemoved, RoleUpdated, SettingsUpdated, GovernanceDomainCreated, GovernanceProposalCreated, GovernanceProposalOpened, GovernanceProposalClosed, GovernanceVoteCast."), (status = 404, description = "No such co-op", body = crate::ErrorBody), (status = 429, description = "Too many connections from this address; see Retry-After", body = crate::ErrorBody)),
)]
pub(crate) async fn connect(
    State(gw): State<Gateway>,
    ip: crate::ClientIp,
    Path(coop_key): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, AppError> {
    // Before its Auth, a connection is limited per IP like the auth routes.
    gw.limit_ip(&ip)?;
    let gw2 = gw.clone();
    let key = coop_key.clone();
    let coop = crate::blocking(move || gw2.index().resolve(DocKind::Coop, &key)).await?;
    Ok(upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(gw, coop, coop_key, socket)))
}

async fn send(socket: &mut WebSocket, value: &Value) -> bool {
    socket
        .send(Message::Text(Utf8Bytes::from(value.to_string())))
        .await
        .is_ok()
}

/// Checks the `Auth` message; the member's DID, or why not.
fn authenticate(gw: &Gateway, coop: &DocId, text: &str) -> Result<String, String> {
    let msg: Value = serde_json::from_str(text)
        .map_err(|_| "send {\"type\": \"Auth\", \"token\": …} first".to_owned())?;
    if msg["type"] != "Auth" {
        return Err("send {\"type\": \"Auth\", \"token\": …} first".into());
    }
    let token = msg["token"]
        .as_str()
        .ok_or("the Auth message has no token")?;
    let shared = &gw.inner;
    let token = shared
        .authority
        .check_token(token, auth::now_secs())
        .map_err(|e| e.message().to_owned())?;
    let Some(known) = gw.delegation(&token.delegation).ok().flatten() else {
        return Err("the token's delegation is unknown here; authenticate again".into());
    };
    gw.still_alive(&known).map_err(|e| e.message().to_owned())?;
    if !token
        .claims
        .scope
        .split(' ')
        .any(|s| s == Scope::CoopRead.as_str())
    {
        return Err("Missing required scope: coop:read".into());
    }
    if !shared.engine.member_may_read(coop, &token.did) {
        return Err(format!("{} is not a member of this co-op", token.did));
    }
    Ok(token.did.to_string())
}

async fn session(gw: Gateway, coop: DocId, coop_key: String, mut socket: WebSocket) {
    let first = tokio::time::timeout(Duration::from_secs(AUTH_SECONDS), socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(_) => return,
        Err(_) => {
            send(
                &mut socket,
                &json!({"type": "AuthError", "message": "no Auth message within 10 s"}),
            )
            .await;
            return;
        }
    };
    let gw2 = gw.clone();
    let checked = tokio::task::spawn_blocking(move || authenticate(&gw2, &coop, &text)).await;
    let did = match checked {
        Ok(Ok(did)) => did,
        Ok(Err(message)) => {
            gw.inner.metrics.auth_failed();
            send(
                &mut socket,
                &json!({"type": "AuthError", "message": message}),
            )
            .await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
        Err(_) => return,
    };
    let events = gw.inner.events.events.clone();
    // Subscribed before AuthOk, so nothing logged after `last_seq` is missed.
    let mut live = events.subscribe();
    let mut last_sent = events.last_seq(&coop);
    if !send(
        &mut socket,
        &json!({"type": "AuthOk", "did": did, "coop_id": coop_key, "coop_doc_id": coop.to_string(), "last_seq": last_sent}),
    )
    .await
    {
        return;
    }
    gw.inner
        .metrics
        .ws_clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(t))) => t.to_string(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    _ => break,
                };
                let msg: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let after = match (msg["type"].as_str(), msg["after_seq"].as_u64()) {
                    (Some("Backfill"), Some(after)) => after,
                    _ => {
                        let error = json!({"type": "Error", "message": "expected {\"type\": \"Backfill\", \"after_seq\": <n>}"});
                        if !send(&mut socket, &error).await { break; }
                        continue;
                    }
                };
                let Some(sent) = backfill(&gw, &mut socket, &coop, after).await else { break };
                last_sent = last_sent.max(sent);
            }
            event = live.recv() => {
                match event {
                    Ok(e) if e.coop != coop || e.seq <= last_sent => {}
                    Ok(e) if e.seq == last_sent + 1 => {
                        if !send(&mut socket, &e.json).await { break; }
                        Metrics::add(&gw.inner.metrics.ws_events);
                        gw.inner.metrics.http.ws_push.observe(e.committed.elapsed().as_secs_f64());
                        last_sent = e.seq;
                    }
                    // A gap, or events dropped while this client lagged:
                    // read them from the log.
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        let Some(sent) = catch_up(&gw, &mut socket, &coop, last_sent).await else { break };
                        last_sent = sent;
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        }
    }
    gw.inner
        .metrics
        .ws_clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// Sends the logged events after `after`, in pages; the last seq sent.
async fn catch_up(
    gw: &Gateway,
    socket: &mut WebSocket,
    coop: &DocId,
    mut after: u64,
) -> Option<u64> {
    loop {
        let page = read_page(gw, coop, after).await?;
        let full = page.len() == BACKFILL_LIMIT;
        for e in page {
            if !send(socket, &e).await {
                return None;
            }
            Metrics::add(&gw.inner.metrics.ws_events);
            after = e["seq"].as_u64().unwrap_or(after);
        }
        if !full {
            return Some(after);
        }
    }
}

async fn read_page(gw: &Gateway, coop: &DocId, after: u64) -> Option<Vec<Value>> {
    let (events, coop) = (gw.inner.events.events.clone(), *coop);
    tokio::task::spawn_blocking(move || events.after(&coop, after, BACKFILL_LIMIT))
        .await
        .ok()?
        .ok()
}

/// Answers one `Backfill`: a page of events, then `BackfillDone`.
async fn backfill(gw: &Gateway, socket: &mut WebSocket, coop: &DocId, after: u64) -> Option<u64> {
    let page = read_page(gw, coop, after).await?;
    let more = page.len() == BACKFILL_LIMIT;
    let mut last = after;
    for e in page {
        if !send(socket, &e).await {
            return None;
        }
        Metrics::add(&gw.inner.metrics.ws_events);
        last = e["seq"].as_u64().unwrap_or(last);
    }
    // `last_seq` is the log's, whatever was asked; `through` is the last
    // this answer sent (the request's `after_seq` when it sent none).
    let (events, id) = (gw.inner.events.events.clone(), *coop);
    let log_last = tokio::task::spawn_blocking(move || events.last_seq(&id))
        .await
        .ok()?;
    let done = json!({"type": "BackfillDone", "last_seq": log_last, "through": last, "more": more});
    send(socket, &done).await.then_some(last)
}
