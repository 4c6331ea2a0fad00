//! Owns the browsers' live feeds: `GET /ws/rigs/{rig}` (one rig: a snapshot of the window, then
//! every frame, estimate, summary and acknowledgement the user's own rules let through) and
//! `GET /ws/rigs` (every rig's summary the user may see). Same-origin only (the `Origin`
//! header, when sent, must name this host). Rights are checked at connect and again every
//! second against the credentials file as it is then, so a removed user or a narrowed rig list
//! closes the feed. A browser that reads too slowly loses frames; it is told how many.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use axum::response::Response;
use dtop_proto::RigId;
use dtop_proto::topic::{self, RigTopic};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info};

use super::rig::Out;
use super::{Live, Rights, rights};
use crate::error::ApiError;
use crate::extract::{AuthUser, Shared, live, rig_id};

/// Close code when the user lost the right to watch (4000–4999 are the application's).
pub const CLOSE_FORBIDDEN: u16 = 4403;
/// Close code when the session ended.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
/// Longest wait for one send to a browser before it is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request comes from a page of this server: no `Origin` (not a browser), or an
/// `Origin` whose host part equals the `Host` header.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), headers.get(HOST).map(|h| h.to_str()))
    else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

fn forbidden(why: String) -> ApiError {
    ApiError::ForbiddenBecause(why)
}

/// `GET /ws/rigs/{rig}`: one rig, live.
pub async fn rig_feed(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(forbidden("Live feeds are same-origin only.".into()));
    }
    let live = Arc::clone(live(&state)?);
    let rig = rig_id(&rig)?;
    let r = rights(&live.acl, &user.0, &rig);
    if !r.samples {
        return Err(forbidden(format!(
            "{} (role {}) may not watch rig {rig}: the role's rules do not allow subscribing to \
             its samples.",
            user.0.username, user.0.role
        )));
    }
    let watch = live
        .hub
        .watch(rig.clone())
        .await
        .ok_or_else(|| ApiError::NotConfigured("The live hub is not running.".into()))?;
    let username = user.0.username.clone();
    Ok(upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            info!(user = %username, rig = %rig, "Live feed opened.");
            let dropped =
                run_rig(socket, state, live, username.clone(), rig.clone(), r, watch).await;
            info!(user = %username, rig = %rig, dropped_frames = dropped, "Live feed closed.");
        }))
}

async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await,
        Ok(Ok(()))
    )
}

fn out_message(out: Out, r: Rights) -> Option<Message> {
    match out {
        Out::Samples(b) => Some(Message::Binary(b)),
        Out::Estimate(b) => r.estimates.then_some(Message::Binary(b)),
        Out::Status(t) | Out::Meta(t) => Some(Message::Text(Utf8Bytes::from(&*t))),
        Out::Ack(t) => r.acks.then(|| Message::Text(Utf8Bytes::from(&*t))),
        Out::Cbc(t) => r.cbc.then(|| Message::Text(Utf8Bytes::from(&*t))),
    }
}

/// The rights the user has now, or why the feed must close.
fn recheck(
    state: &Shared,
    live: &Live,
    username: &str,
    rig: &RigId,
) -> Result<Rights, (u16, &'static str)> {
    let identity = state
        .users
        .identity(username)
        .ok_or((CLOSE_UNAUTHENTICATED, "the user no longer exists"))?;
    let r = rights(&live.acl, &identity, rig);
    if r.samples {
        Ok(r)
    } else {
        Err((CLOSE_FORBIDDEN, "you may no longer watch this rig"))
    }
}

async fn run_rig(
    mut socket: WebSocket,
    state: Shared,
    live: Arc<Live>,
    username: String,
    rig: RigId,
    mut r: Rights,
    watch: super::hub::Watch,
) -> u64 {
    let mut rx = watch.rx;
    let hello = json!({
        "type": "hello",
        "rig": rig.as_str(),
        "user": username,
        "may_command": r.command,
        "sees_acks": r.acks,
        "sees_estimates": r.estimates,
    });
    if !send(&mut socket, Message::Text(hello.to_string().into())).await {
        return 0;
    }
    for out in watch.snapshot {
        if let Some(m) = out_message(out, r)
            && !send(&mut socket, m).await
        {
            return 0;
        }
    }
    let mut dropped_total = 0u64;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => {
                let _ = send(&mut socket, Message::Close(Some(CloseFrame { code: 1001, reason: "server stopping".into() }))).await;
                break;
            }
            out = rx.recv() => match out {
                Ok(out) => {
                    if let Some(m) = out_message(out, r)
                        && !send(&mut socket, m).await
                    {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    dropped_total += n;
                    debug!(user = %username, rig = %rig, dropped = n, "A browser fell behind; frames dropped.");
                    let note = json!({"type": "dropped", "frames": n, "total": dropped_total});
                    if !send(&mut socket, Message::Text(note.to_string().into())).await {
                        break;
                    }
                }
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = check.tick() => match recheck(&state, &live, &username, &rig) {
                Ok(now) => r = now,
                Err((code, reason)) => {
                    info!(user = %username, rig = %rig, reason, "Live feed closed: rights changed.");
                    let _ = send(&mut socket, Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
                    break;
                }
            },
        }
    }
    dropped_total
}

/// `GET /ws/rigs`: every rig's summary this user may see, as it changes.
pub async fn overview_feed(
    State(state): State<Shared>,
    user: AuthUser,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(forbidden("Live feeds are same-origin only.".into()));
    }
    let live = Arc::clone(live(&state)?);
    let (summaries, rx) = live
        .hub
        .overview()
        .await
        .ok_or_else(|| ApiError::NotConfigured("The live hub is not running.".into()))?;
    let username = user.0.username.clone();
    Ok(
        upgrade
            .on_upgrade(move |socket| run_overview(socket, state, live, username, summaries, rx)),
    )
}

/// Whether `who` may see the summary `text` (its rig's status topic, by their own rules).
fn may_see_summary(live: &Live, who: &dtop_auth::Identity, text: &str) -> bool {
    let rig = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("rig").and_then(|r| r.as_str()).map(str::to_owned))
        .and_then(|r| RigId::new(r).ok());
    rig.is_some_and(|rig| {
        live.acl
            .may_subscribe(who, &topic::rig(&rig, RigTopic::Status))
    })
}

async fn run_overview(
    mut socket: WebSocket,
    state: Shared,
    live: Arc<Live>,
    username: String,
    summaries: Vec<Arc<str>>,
    mut rx: tokio::sync::broadcast::Receiver<Arc<str>>,
) {
    let Some(mut who) = state.users.identity(&username) else {
        return;
    };
    for s in summaries {
        if may_see_summary(&live, &who, &s)
            && !send(&mut socket, Message::Text(Utf8Bytes::from(&*s))).await
        {
            return;
        }
    }
    let mut check = tokio::time::interval(Duration::from_secs(1));
    check.tick().await;
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => break,
            s = rx.recv() => match s {
                Ok(s) => {
                    if may_see_summary(&live, &who, &s) && !send(&mut socket, Message::Text(Utf8Bytes::from(&*s))).await {
                        break;
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            _ = check.tick() => match state.users.identity(&username) {
                Some(now) => who = now,
                None => {
                    let _ = send(&mut socket, Message::Close(Some(CloseFrame { code: CLOSE_UNAUTHENTICATED, reason: "the user no longer exists".into() }))).await;
                    break;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn accepts_only_this_hosts_origin_or_none() {
        assert!(same_origin(&headers(None, "127.0.0.1:8080")));
        assert!(same_origin(&headers(
            Some("http://127.0.0.1:8080"),
            "127.0.0.1:8080"
        )));
        assert!(same_origin(&headers(
            Some("https://lab.example"),
            "lab.example"
        )));
        assert!(!same_origin(&headers(
            Some("http://evil.example"),
            "127.0.0.1:8080"
        )));
        assert!(!same_origin(&headers(
            Some("http://127.0.0.1:8081"),
            "127.0.0.1:8080"
        )));
        assert!(!same_origin(&headers(Some("null"), "127.0.0.1:8080")));
    }
}
