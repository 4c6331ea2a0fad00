//! Durable storage of line-protocol batches: the [`Sink`] kinds and the writer task that owns
//! the batch.
//!
//! Knows nothing about MQTT or rigs beyond the [`crate::rig::Chunk`]s it is handed.
//!
//! - [`file`]: rotating `.lp` files on local disk.
//! - [`http`]: InfluxDB 1.x `/write` and 2.x `/api/v2/write` over reqwest.
//! - [`batch`]: the pure batch accumulator, and the blocks each batch carries.
//! - [`outbox`]: sealed batches waiting for storage, in memory then in the disk spool.
//! - [`persisted`]: per-rig persisted watermarks (pure) and their state file.
//! - [`writer`]: the task that flushes batches, spools and replays them, retries failed
//!   writes, and advances the watermarks (one per storage node).
//! - [`nodes`]: several storage nodes: one writer per node, the chunks and declarations fanned
//!   out to each, and the published watermark as the minimum over the nodes'.
//! - [`audit`]: which block seqs InfluxDB holds, against the range expected (holes).
//! - [`query`]: reading back from InfluxDB 1.x (`/query`), for the audit and replay.

pub mod audit;
pub mod batch;
pub mod file;
pub mod http;
pub mod nodes;
pub mod outbox;
pub mod persisted;
pub mod query;
pub mod writer;

use std::time::Duration;

use bytes::Bytes;

use crate::config::{
    HttpConfig, SecretError, SpoolFsync, StorageConfig, StorageSpoolConfig, TwinConfig,
};
pub use file::FileSink;
pub use http::HttpSink;
pub use writer::{Settled, Watermarks, Writer, WriterConfig};

/// Where batches go.
#[derive(Debug)]
pub enum Sink {
    File(FileSink),
    Http(HttpSink),
}

/// How a failed write should be handled; the variants are the reactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// Transient (5xx, 429, timeout, connection or disk error): keep the batch and retry.
    #[error("{detail}")]
    Retryable {
        detail: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The server refused the batch for a reason an operator can fix without touching the data
    /// (401, 403, 404: bad credentials, missing database or bucket): keep the batch, retry, and
    /// say loudly that someone must act.
    #[error("HTTP {status}: {message}")]
    NeedsOperator { status: u16, message: String },
    /// The server refused the batch as malformed (other 4xx): retrying cannot help.
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
}

/// Why storage could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("storage URL {0}")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("a storage node list cannot hold another list")]
    NestedNodes,
    #[error("cannot create the storage directory {}: {source}", path.display())]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The disk spool's settings from `[spool]`; `None` without a `spool.dir`. A full spool
/// refuses (the writer then gives up the batch and counts it) rather than deleting older
/// batches.
pub fn spool_config(c: &StorageSpoolConfig) -> Option<dtop_spool::SpoolConfig> {
    spool_config_in(c, c.dir.clone()?)
}

/// Spool subdirectory of storage node `node` under `[spool] dir`: each node of a list has its
/// own spool and watermark file, `capacity_mib` each.
pub fn node_spool_dir(spool_dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    spool_dir.join("nodes").join(node)
}

/// The spool of storage node `node` of a list (see [`node_spool_dir`]); `None` without a
/// `spool.dir`.
pub fn node_spool_config(c: &StorageSpoolConfig, node: &str) -> Option<dtop_spool::SpoolConfig> {
    let dir = node_spool_dir(c.dir.as_deref()?, node);
    spool_config_in(c, dir)
}

fn spool_config_in(
    c: &StorageSpoolConfig,
    dir: std::path::PathBuf,
) -> Option<dtop_spool::SpoolConfig> {
    let fsync = match c.fsync {
        SpoolFsync::Always => dtop_spool::FsyncPolicy::Always,
        SpoolFsync::Interval => dtop_spool::FsyncPolicy::IntervalMs(c.fsync_interval_ms),
        SpoolFsync::Never => dtop_spool::FsyncPolicy::Never,
    };
    Some(
        dtop_spool::SpoolConfig::new(dir, c.capacity_mib.saturating_mul(1024 * 1024))
            .with_fsync(fsync)
            .with_full(dtop_spool::FullPolicy::Refuse),
    )
}

impl Sink {
    /// Builds the configured sink: reads its secrets, builds the HTTP client or creates the
    /// directory. Sends nothing yet. A list of nodes has one sink per node
    /// ([`Sink::from_storage`] on each of [`StorageConfig::nodes`]).
    pub async fn from_config(config: &TwinConfig) -> Result<Self, StoreError> {
        Self::from_storage(&config.storage, &config.http).await
    }

    /// The sink of one storage kind (not a node list).
    pub async fn from_storage(
        storage: &StorageConfig,
        http: &HttpConfig,
    ) -> Result<Self, StoreError> {
        match storage {
            StorageConfig::File(c) => Ok(Sink::File(FileSink::create(c).await?)),
            StorageConfig::InfluxV1(c) => Ok(Sink::Http(HttpSink::influx_v1(c, http)?)),
            StorageConfig::InfluxV2(c) => Ok(Sink::Http(HttpSink::influx_v2(c, http)?)),
            StorageConfig::Nodes(_) => Err(StoreError::NestedNodes),
        }
    }

    /// Writes one batch of newline-terminated lines.
    pub async fn write(&mut self, body: &Bytes) -> Result<(), WriteError> {
        match self {
            Sink::File(s) => s.write(body).await,
            Sink::Http(s) => s.write(body).await,
        }
    }

    /// Makes everything written durable and releases the sink.
    pub async fn close(&mut self) -> Result<(), WriteError> {
        match self {
            Sink::File(s) => s.close().await,
            Sink::Http(_) => Ok(()),
        }
    }
}
