//! Owns the MQTT publisher of study changes: each changed record goes retained at QoS 1 to
//! `dtop/v1/studies/{id}/state`, and its chunk counts at QoS 0, not retained, to
//! `dtop/v1/studies/{id}/progress`; and each catalogue model's latest usable version (current or
//! approved, the one a twin following the model adopts) goes retained at QoS 1 to
//! `dtop/v1/models/{name}/latest` whenever it changes, found by reading the catalogue every
//! [`MODELS_POLL`] (so a version approved through any server, or the CLI, is published). The
//! connection is kept by polling rumqttc's event loop, with jittered exponential backoff
//! between reconnects (rumqttc has none of its own).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dtop_auth::Secret;
use dtop_daemon::{Backoff, BrokerAddr, Failover, Retry};
use std::collections::BTreeMap;

use dtop_engine::{Engine, ModelVersion, StudyRecord};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::events::Changes;
use crate::metrics::Metrics;

/// Topic of a study's retained state.
pub fn state_topic(record: &StudyRecord) -> String {
    format!("dtop/v1/studies/{}/state", record.id.0)
}

/// Topic of a study's progress.
pub fn progress_topic(record: &StudyRecord) -> String {
    format!("dtop/v1/studies/{}/progress", record.id.0)
}

/// Topic of a model's latest usable version.
pub fn model_topic(name: &str) -> String {
    format!("dtop/v1/models/{name}/latest")
}

/// How often the catalogue is read for changed latest usable versions.
pub const MODELS_POLL: Duration = Duration::from_secs(2);

/// Each model's latest usable version (current or approved), by name: what
/// `dtop/v1/models/{name}/latest` carries. Proposed and rejected versions are never in it.
pub fn latest_usable(models: &[ModelVersion]) -> BTreeMap<&str, &ModelVersion> {
    let mut out: BTreeMap<&str, &ModelVersion> = BTreeMap::new();
    for m in models.iter().filter(|m| m.status.is_usable()) {
        let newer = out
            .get(m.name.as_str())
            .is_none_or(|v| v.version < m.version);
        if newer {
            out.insert(m.name.as_str(), m);
        }
    }
    out
}

/// The progress message.
#[derive(Debug, Serialize)]
pub struct Progress {
    /// Chunks finished.
    pub chunks_done: u32,
    /// Chunks in all.
    pub chunks_total: u32,
}

/// Why the publisher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The password file cannot be read.
    #[error("cannot read the MQTT password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Reads the password (first line of the file).
///
/// # Errors
/// When the file cannot be read.
pub fn read_password(config: &MqttConfig) -> Result<Option<Secret<String>>, MqttError> {
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| MqttError::PasswordFile {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(Secret::new(
        text.lines().next().unwrap_or_default().to_owned(),
    )))
}

/// Publishes every study change until `shutdown`, then disconnects.
pub async fn run_publisher(
    config: MqttConfig,
    password: Option<Secret<String>>,
    changes: Changes,
    engine: Engine,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut failover = Failover::new(config.broker_list());
    let options = move |broker: &BrokerAddr| {
        let mut options = MqttOptions::new(&config.client_id, broker.host(), broker.port());
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(user) = &config.username {
            let pw = password
                .as_ref()
                .map(|p| p.expose().clone())
                .unwrap_or_default();
            options.set_credentials(user.clone(), pw);
        }
        options
    };
    let (client, mut eventloop) = AsyncClient::new(options(failover.current()), 256);
    let mut rx = changes.subscribe();
    let connection = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = eventloop.poll() => event,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        info!(broker = %failover.current(), "Connected to the MQTT broker.");
                        failover.connected(tokio::time::Instant::now().into_std());
                        backoff.reset();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let failed = failover.current().clone();
                        let delay = match failover.failed(tokio::time::Instant::now().into_std()) {
                            Retry::Now => Duration::ZERO,
                            Retry::AfterBackoff => backoff.next_delay(&mut rand::rng()),
                        };
                        if *failover.current() != failed {
                            // Only the address changes; the event loop keeps its queue.
                            eventloop.mqtt_options = options(failover.current());
                        }
                        warn!(error = %e, broker = %failed, next_broker = %failover.current(), delay_ms = delay.as_millis() as u64, "MQTT connection failed; reconnecting.");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        })
    };
    // The version last published per model. A version's status only changes from proposed,
    // which is never published, so the version number tells a change.
    let mut published: BTreeMap<String, u32> = BTreeMap::new();
    let mut models_tick = tokio::time::interval(MODELS_POLL);
    models_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let record = tokio::select! {
            () = shutdown.cancelled() => break,
            _ = models_tick.tick() => {
                publish_models(&client, &engine, &mut published, &metrics).await;
                continue;
            }
            record = rx.recv() => record,
        };
        let record = match record {
            Ok(record) => record,
            Err(RecvError::Lagged(n)) => {
                warn!(
                    skipped = n,
                    "MQTT publisher fell behind; some intermediate study states were not published."
                );
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Ok(state) = serde_json::to_vec(&*record) else {
            continue;
        };
        let progress = Progress {
            chunks_done: record.chunks_done,
            chunks_total: record.chunks_total,
        };
        let Ok(progress) = serde_json::to_vec(&progress) else {
            continue;
        };
        let sent = tokio::select! {
            () = shutdown.cancelled() => break,
            sent = async {
                client.publish(state_topic(&record), QoS::AtLeastOnce, true, state).await?;
                client.publish(progress_topic(&record), QoS::AtMostOnce, false, progress).await
            } => sent,
        };
        match sent {
            Ok(()) => {
                metrics.mqtt_published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "Could not queue a study state for MQTT."),
        }
    }
    let _ = client.try_disconnect();
    let _ = connection.await;
}

/// Publishes every model whose latest usable version changed since `published`.
async fn publish_models(
    client: &AsyncClient,
    engine: &Engine,
    published: &mut BTreeMap<String, u32>,
    metrics: &Metrics,
) {
    let models = match engine.models().await {
        Ok(models) => models,
        Err(e) => {
            warn!(error = %e, "Could not read the model catalogue to publish its latest versions.");
            return;
        }
    };
    for (name, version) in latest_usable(&models) {
        if published.get(name) == Some(&version.version) {
            continue;
        }
        let Ok(body) = serde_json::to_vec(version) else {
            continue;
        };
        match client
            .publish(model_topic(name), QoS::AtLeastOnce, true, body)
            .await
        {
            Ok(()) => {
                published.insert(name.to_owned(), version.version);
                metrics.mqtt_published.fetch_add(1, Ordering::Relaxed);
                info!(
                    model = name,
                    version = version.version,
                    "Published the model's latest usable version."
                );
            }
            Err(e) => warn!(error = %e, "Could not queue a model version for MQTT."),
        }
    }
}
