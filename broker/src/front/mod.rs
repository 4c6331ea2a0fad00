//! The authorizing network front: our own listeners speak MQTT 3.1.1 and 5 to clients,
//! authenticate them, check every PUBLISH, SUBSCRIBE and will against the ACL, keep MQTT
//! session semantics, and reach rumqttd's router through one local link per session for
//! fan-out and retained messages. Owns the session registry; the router owns routing.
//!
//! # Layout
//! - [`wire`]: framing, version detection, rumqttc codecs ↔ one packet model (pure).
//! - [`session`]: one session's subscriptions, QoS flows and queue (no I/O).
//! - [`connection`]: one client connection's I/O loop, and parked sessions.
//! - [`listener`]: TCP, TLS and WebSocket accept loops.

pub mod connection;
pub mod listener;
pub mod session;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::acl::Acl;
use crate::config::LimitsConfig;
use crate::credentials::Credentials;
use crate::metrics::Metrics;
use session::Session;

/// Password verifications running at once: one per core of the 2-core machines DTOP targets,
/// plus slack so a legitimate login rarely waits behind a flood.
const MAX_CONCURRENT_VERIFIES: usize = 4;

/// A pause in the router's answer that ends a retained-message fetch.
const RETAINED_FETCH_QUIET: std::time::Duration = std::time::Duration::from_millis(50);

/// Bound on the notifications one retained-message fetch reads.
const RETAINED_FETCH_MAX_BATCHES: usize = 10_000;

/// How long a new session waits for rumqttd's router to register its link.
pub const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Authentication and authorization state; absent when the broker runs without `[auth]`.
#[derive(Debug)]
pub struct Auth {
    /// Users, roles, hashes.
    pub credentials: Credentials,
    /// Compiled role rules.
    pub acl: Acl,
}

/// A request to the current holder of a session (its connection, or its parked task).
#[derive(Debug)]
pub enum Control {
    /// A new connection with the same client id: stop and hand the session over (or `None`
    /// when it has ended).
    Takeover(oneshot::Sender<Option<Session>>),
}

/// The registry entry of one client id.
#[derive(Debug)]
struct Slot {
    /// Distinguishes successive holders, so a stale holder cannot remove a newer entry.
    generation: u64,
    control_tx: mpsc::Sender<Control>,
}

/// State shared by every connection.
pub struct Front {
    /// rumqttd, for router links (its own listeners are never started).
    broker: rumqttd::Broker,
    /// Connection limits.
    pub limits: LimitsConfig,
    /// `None`: anonymous clients may do anything.
    pub auth: Option<Auth>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    registry: Mutex<HashMap<String, Slot>>,
    share_groups: Mutex<HashMap<(String, String), u64>>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    /// Bounds concurrent argon2id verifications (19 MiB and tens of ms each), so a flood of
    /// bad logins cannot exhaust memory or the blocking thread pool.
    pub verify_slots: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("limits", &self.limits)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// Releases a connection slot when dropped.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<Front>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Front {
    /// A front over `broker`'s router.
    pub fn new(
        broker: rumqttd::Broker,
        limits: LimitsConfig,
        auth: Option<Auth>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            broker,
            limits,
            auth,
            metrics,
            registry: Mutex::new(HashMap::new()),
            share_groups: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            verify_slots: tokio::sync::Semaphore::new(MAX_CONCURRENT_VERIFIES),
        }
    }

    /// A process-unique number (session ids, generations, assigned client ids).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a connection slot, or `None` at `limits.max_connections`.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let previous = self.connections.fetch_add(1, Ordering::Relaxed);
        let permit = ConnectionPermit(Arc::clone(self));
        (previous < self.limits.max_connections).then_some(permit)
    }

    /// Opens a router link. rumqttd's `Broker::link` blocks until the router answers, so it
    /// runs on a blocking thread, and we stop waiting after [`LINK_TIMEOUT`].
    pub async fn open_link(
        self: &Arc<Self>,
        session_id: u64,
    ) -> Result<(rumqttd::local::LinkTx, rumqttd::local::LinkRx), String> {
        let front = Arc::clone(self);
        let opening = tokio::task::spawn_blocking(move || {
            front
                .broker
                .link(&format!("dtop-session-{session_id}"))
                .map_err(|e| e.to_string())
        });
        match tokio::time::timeout(LINK_TIMEOUT, opening).await {
            Ok(joined) => joined.map_err(|e| e.to_string())?,
            Err(_) => Err(format!("the router did not answer within {LINK_TIMEOUT:?}")),
        }
    }

    /// The retained messages matching `filter`, read through a one-shot router link (rumqttd
    /// sends retained messages only for a link's *new* subscriptions, but MQTT 3.1.1 §3.8.4 and
    /// MQTT 5 Retain Handling 0 re-send them on every SUBSCRIBE). Each forward is relabelled
    /// with `sub_id` so the session can deliver it as a match of its own subscription.
    pub async fn fetch_retained(
        self: &Arc<Self>,
        filter: &str,
        sub_id: usize,
    ) -> Vec<rumqttd::Forward> {
        use rumqttd::protocol as rd;
        let Ok((mut tx, mut rx)) = self.open_link(self.next_id()).await else {
            return Vec::new();
        };
        let subscribe = rd::Packet::Subscribe(
            rd::Subscribe {
                pkid: 0,
                filters: vec![rd::Filter {
                    path: filter.to_owned(),
                    qos: rd::QoS::AtMostOnce,
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: rd::RetainForwardRule::OnEverySubscribe,
                }],
            },
            None,
        );
        let mut retained = Vec::new();
        if tx.send(subscribe).await.is_ok() {
            // The router answers a new subscription with its SUBACK and then, in its next pass,
            // every stored retained message at once; a quiet gap means it is done.
            for _ in 0..RETAINED_FETCH_MAX_BATCHES {
                match tokio::time::timeout(RETAINED_FETCH_QUIET, rx.next()).await {
                    Ok(Ok(Some(rumqttd::Notification::Forward(mut forward)))) => {
                        if forward.cursor.is_none() {
                            let props = forward.properties.get_or_insert_with(Default::default);
                            props.subscription_identifiers = vec![sub_id];
                            retained.push(forward);
                        }
                    }
                    Ok(Ok(Some(rumqttd::Notification::Unschedule))) => {
                        let _ = rx.wake().await;
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
        }
        let disconnect = rd::Disconnect {
            reason_code: rd::DisconnectReasonCode::NormalDisconnection,
        };
        let _ = tx.send(rd::Packet::Disconnect(disconnect, None)).await;
        retained
    }

    /// Registers a new holder for `client_id`, returning the previous holder's control
    /// channel (to take its session over) and our generation.
    fn claim(
        &self,
        client_id: &str,
        control_tx: mpsc::Sender<Control>,
    ) -> (Option<mpsc::Sender<Control>>, u64) {
        let generation = self.next_id();
        let previous = self.registry.lock().ok().and_then(|mut registry| {
            registry
                .insert(
                    client_id.to_owned(),
                    Slot {
                        generation,
                        control_tx,
                    },
                )
                .map(|slot| slot.control_tx)
        });
        (previous, generation)
    }

    /// Removes `client_id`'s entry if it still belongs to `generation`.
    pub fn release(&self, client_id: &str, generation: u64) {
        if let Ok(mut registry) = self.registry.lock()
            && registry
                .get(client_id)
                .is_some_and(|slot| slot.generation == generation)
        {
            registry.remove(client_id);
        }
    }

    /// The router-side name of a shared subscription. rumqttd keys share groups by group name
    /// alone, so two filters in one group would share a cursor; each (group, filter) pair gets
    /// its own router group instead.
    pub fn router_filter(&self, filter: &str) -> String {
        let Some((group, inner)) = filter
            .strip_prefix("$share/")
            .and_then(|rest| rest.split_once('/'))
        else {
            return filter.to_owned();
        };
        let number = self.share_groups.lock().map_or(0, |mut groups| {
            let next = groups.len() as u64 + 1;
            *groups
                .entry((group.to_owned(), inner.to_owned()))
                .or_insert(next)
        });
        format!("$share/g{number}/{inner}")
    }
}
