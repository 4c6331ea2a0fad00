//! Owns the MQTT publisher of study changes: each changed record goes retained at QoS 1 to
//! `dtop/v1/studies/{id}/state`, and its chunk counts at QoS 0, not retained, to
//! `dtop/v1/studies/{id}/progress`. The connection is kept by polling rumqttc's event loop,
//! with jittered exponential backoff between reconnects (rumqttc has none of its own).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dtop_auth::Secret;
use dtop_daemon::Backoff;
use dtop_engine::StudyRecord;
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
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some(user) = &config.username {
        let pw = password
            .as_ref()
            .map(|p| p.expose().clone())
            .unwrap_or_default();
        options.set_credentials(user.clone(), pw);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 256);
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
                        info!("Connected to the MQTT broker.");
                        backoff.reset();
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let delay = backoff.next_delay(&mut rand::rng());
                        warn!(error = %e, delay_ms = delay.as_millis() as u64, "MQTT connection failed; reconnecting.");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
        })
    };
    loop {
        let record = tokio::select! {
            () = shutdown.cancelled() => break,
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
