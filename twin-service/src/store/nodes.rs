//! Several storage nodes (`[[storage.nodes]]`): one [`Writer`] per node, each the sole owner
//! of its node's batches, disk spool (`{spool.dir}/nodes/{name}`), retries and per-rig
//! watermarks; this module owns only the fan-out of what the writers are fed and the
//! combination of what they report.
//!
//! - Every chunk, loss declaration and watermark seen on the broker goes to every node's
//!   writer (cloned), so each node gets every line and a node that is down or slow only fills
//!   its own spool: its writer still reads every chunk at once, so the others never wait.
//! - The published watermark of a rig is the minimum over the nodes' ([`min_over_nodes`]):
//!   a block counts as persisted only once every node acknowledged it, so the edge keeps it
//!   until then and a node that comes back is filled from its spool (or the edge's replay).
//! - The storage stats are combined ([`combine_stats`]) with each node's kept under its name
//!   (`StoreStats::nodes`), which the status topic and `/metrics` show with a `node` label.
//!
//! Why one writer task per node rather than one task owning N node states: the writer is
//! already the single owner of exactly the state a node needs (outbox, spool, backoff,
//! trackers, counters), with its own tested guarantees; running it once per node keeps that
//! code unchanged, makes one node's backoff or disk spill structurally unable to delay another,
//! and leaves the only shared state, the minimum, to a task that owns nothing else.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use dtop_proto::RigId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::persisted::DeclaredLoss;
use super::writer::{Settled, Watermarks, Writer, WriterConfig};
use super::{Sink, StoreError};
use crate::config::TwinConfig;
use crate::owner::Owners;
use crate::rig::Chunk;
use crate::stats::{RigStoreStats, StoreStats};

/// Chunks queued for one node's writer (it reads them at once, so this rarely fills).
const NODE_QUEUE_CHUNKS: usize = 256;
/// Watermarks seen on the broker and loss declarations queued for one node's writer.
const NODE_QUEUE_EVENTS: usize = 256;

/// Why the storage nodes could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    #[error("storage node {node}: {source}")]
    Store {
        node: String,
        #[source]
        source: StoreError,
    },
    #[error("storage node {node}: cannot open its spool: {source}")]
    Spool {
        node: String,
        #[source]
        source: dtop_spool::SpoolError,
    },
}

/// The published watermark of each rig: the lowest of the nodes' watermarks, for the rigs
/// every node has one for (a node without one for a rig has not stored its start yet).
pub fn min_over_nodes<'a>(nodes: impl IntoIterator<Item = &'a Watermarks>) -> Watermarks {
    let mut nodes = nodes.into_iter();
    let Some(first) = nodes.next() else {
        return Watermarks::new();
    };
    let mut min = first.clone();
    for node in nodes {
        min.retain(|rig, w| match node.get(rig) {
            Some(other) => {
                *w = (*w).min(*other);
                true
            }
            None => false,
        });
    }
    min
}

/// One view of the nodes' storage stats, each node's kept in `nodes` by name.
///
/// - Writes, errors, drops and what waits (lines, batches, spool bytes) add up over the nodes;
///   `storage_failing` is any node failing; `last_error` is the first failing node's, named.
/// - Per rig: stored blocks, lines and samples are the lowest over the nodes (what every node
///   holds, as far as counters tell), duplicates and drops by reason add up, the backlog is
///   the largest, the watermark the lowest ([`min_over_nodes`]). What the edge declared lost
///   reaches every node alike, so those counts are the largest over the nodes.
///
/// With one node the result is that node's stats (plus `nodes`).
pub fn combine_stats(nodes: &BTreeMap<String, StoreStats>) -> StoreStats {
    let mut out = StoreStats::default();
    let mut rigs: BTreeMap<RigId, Vec<&RigStoreStats>> = BTreeMap::new();
    for (name, s) in nodes {
        out.lines_written_total += s.lines_written_total;
        out.batches_written_total += s.batches_written_total;
        out.write_errors_total += s.write_errors_total;
        out.lines_rejected_total += s.lines_rejected_total;
        out.lines_dropped_total += s.lines_dropped_total;
        out.lines_pending += s.lines_pending;
        out.batches_in_memory += s.batches_in_memory;
        out.batches_spooled += s.batches_spooled;
        out.spool_bytes += s.spool_bytes;
        if s.storage_failing && !out.storage_failing {
            out.last_error = s.last_error.as_ref().map(|e| format!("node {name}: {e}"));
        }
        out.storage_failing |= s.storage_failing;
        for (rig, r) in &s.rigs {
            rigs.entry(rig.clone()).or_default().push(r);
        }
    }
    if out.last_error.is_none() {
        out.last_error = nodes
            .iter()
            .find_map(|(name, s)| s.last_error.as_ref().map(|e| format!("node {name}: {e}")));
    }
    for (rig, per_node) in rigs {
        let complete = per_node.len() == nodes.len();
        let mut c = RigStoreStats::default();
        let lowest = |f: fn(&RigStoreStats) -> u64| {
            if complete {
                per_node.iter().map(|r| f(r)).min().unwrap_or(0)
            } else {
                0
            }
        };
        c.blocks_stored = lowest(|r| r.blocks_stored);
        c.lines_written = lowest(|r| r.lines_written);
        c.samples_stored = lowest(|r| r.samples_stored);
        let highest = |f: fn(&RigStoreStats) -> u64| per_node.iter().map(|r| f(r)).max();
        c.seqs_skipped_at_edge = highest(|r| r.seqs_skipped_at_edge).unwrap_or(0);
        c.loss_declarations_total = highest(|r| r.loss_declarations_total).unwrap_or(0);
        c.loss_blocks_already_stored = highest(|r| r.loss_blocks_already_stored).unwrap_or(0);
        c.loss_blocks_stored_after_all = highest(|r| r.loss_blocks_stored_after_all).unwrap_or(0);
        c.loss_declarations_refused = highest(|r| r.loss_declarations_refused).unwrap_or(0);
        c.persisted_seq = if complete {
            per_node
                .iter()
                .map(|r| r.persisted_seq)
                .collect::<Option<Vec<u64>>>()
                .and_then(|w| w.into_iter().min())
        } else {
            None
        };
        for r in &per_node {
            c.blocks_duplicate_stored += r.blocks_duplicate_stored;
            c.blocks_fenced += r.blocks_fenced;
            c.backlog_s = c.backlog_s.max(r.backlog_s);
            add_by_reason(&mut c.blocks_dropped, &r.blocks_dropped);
            add_by_reason(&mut c.samples_dropped, &r.samples_dropped);
            max_by_reason(&mut c.blocks_lost_at_edge, &r.blocks_lost_at_edge);
            max_by_reason(&mut c.samples_lost_at_edge, &r.samples_lost_at_edge);
        }
        out.rigs.insert(rig, c);
    }
    out.nodes = nodes.clone();
    out
}

fn add_by_reason(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (reason, n) in from {
        *into.entry(reason.clone()).or_default() += n;
    }
}

fn max_by_reason(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (reason, n) in from {
        let e = into.entry(reason.clone()).or_default();
        *e = (*e).max(*n);
    }
}

/// One node's writer, not started yet, and the ends of its channels.
#[derive(Debug)]
struct Node {
    name: String,
    writer: Writer,
    chunk_tx: mpsc::Sender<Chunk>,
    published_tx: mpsc::Sender<(RigId, u64)>,
    loss_tx: mpsc::Sender<(RigId, DeclaredLoss)>,
    watermark_rx: watch::Receiver<Watermarks>,
    stats_rx: watch::Receiver<StoreStats>,
}

/// The writers of a node list, built (sinks made, spools opened, watermarks loaded) but not
/// started; [`NodeSet::run`] runs them.
#[derive(Debug)]
pub struct NodeSet {
    nodes: Vec<Node>,
}

impl NodeSet {
    /// One writer per node of `config.storage`, each with its own sink and, with a
    /// `[spool] dir`, its own spool in `{dir}/nodes/{name}` (which also keeps its watermarks).
    pub async fn build(
        config: &TwinConfig,
        shutdown: &CancellationToken,
        owners: &watch::Receiver<Owners>,
        settled_txs: Vec<watch::Sender<Settled>>,
    ) -> Result<Self, NodesError> {
        let precision = config.storage.precision();
        let mut nodes = Vec::new();
        // One reporter per node, in node order: a rig settles once every node has it.
        let mut settled_txs = settled_txs.into_iter();
        for node in config.storage.nodes() {
            let sink = Sink::from_storage(&node.storage, &config.http)
                .await
                .map_err(|source| NodesError::Store {
                    node: node.name.clone(),
                    source,
                })?;
            let (chunk_tx, chunk_rx) = mpsc::channel(NODE_QUEUE_CHUNKS);
            let (published_tx, published_rx) = mpsc::channel(NODE_QUEUE_EVENTS);
            let (loss_tx, loss_rx) = mpsc::channel(NODE_QUEUE_EVENTS);
            let (stats_tx, stats_rx) = watch::channel(StoreStats::default());
            let (watermark_tx, watermark_rx) = watch::channel(Watermarks::new());
            let mut writer = Writer::new(
                sink,
                chunk_rx,
                WriterConfig::from(config),
                shutdown.clone(),
                stats_tx,
            )
            .with_loss_records(precision)
            .with_owners(owners.clone());
            if let Some(settled_tx) = settled_txs.next() {
                writer = writer.with_settled(settled_tx);
            }
            if let Some(spool_config) = super::node_spool_config(&config.spool, &node.name) {
                let spool_err = |source| NodesError::Spool {
                    node: node.name.clone(),
                    source,
                };
                let spool = dtop_spool::Spool::open(spool_config).map_err(spool_err)?;
                writer = writer.with_spool(spool).map_err(spool_err)?;
            }
            let writer = writer
                .with_watermarks(watermark_tx)
                .with_published_watermarks(published_rx)
                .with_declared_losses(loss_rx);
            info!(node = %node.name, storage = %node.storage.describe(), "Storage node ready.");
            nodes.push(Node {
                name: node.name,
                writer,
                chunk_tx,
                published_tx,
                loss_tx,
                watermark_rx,
                stats_rx,
            });
        }
        Ok(Self { nodes })
    }

    /// Names of the nodes, in configuration order.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Runs every node's writer, feeding each everything that arrives on the three inputs,
    /// and sends the minimum watermarks and combined stats on. Stops when the inputs are
    /// closed and every writer has stopped (each drains as a lone writer does); returns the
    /// combined final stats.
    pub async fn run(
        self,
        chunk_rx: mpsc::Receiver<Chunk>,
        published_rx: mpsc::Receiver<(RigId, u64)>,
        loss_rx: mpsc::Receiver<(RigId, DeclaredLoss)>,
        watermark_tx: watch::Sender<Watermarks>,
        stats_tx: watch::Sender<StoreStats>,
    ) -> StoreStats {
        let mut outputs = Vec::new();
        let mut inputs = Vec::new();
        let mut writers = Vec::new();
        for n in self.nodes {
            writers.push((n.name.clone(), tokio::spawn(n.writer.run())));
            outputs.push((n.name.clone(), n.watermark_rx, n.stats_rx));
            inputs.push((n.chunk_tx, n.published_tx, n.loss_tx));
        }
        let combiner = tokio::spawn(combine(outputs, watermark_tx, stats_tx));
        fan_out(chunk_rx, published_rx, loss_rx, inputs).await;
        let mut finals = BTreeMap::new();
        for (name, handle) in writers {
            match handle.await {
                Ok(stats) => {
                    finals.insert(name, stats);
                }
                Err(e) => error!(node = %name, error = %e, "A storage node's writer failed."),
            }
        }
        if let Err(e) = combiner.await {
            error!(error = %e, "The storage node combiner failed.");
        }
        combine_stats(&finals)
    }
}

type NodeInputs = (
    mpsc::Sender<Chunk>,
    mpsc::Sender<(RigId, u64)>,
    mpsc::Sender<(RigId, DeclaredLoss)>,
);

/// Copies each input to every node until all three inputs are closed; then drops the node
/// senders, which lets the writers drain and stop.
async fn fan_out(
    mut chunk_rx: mpsc::Receiver<Chunk>,
    mut published_rx: mpsc::Receiver<(RigId, u64)>,
    mut loss_rx: mpsc::Receiver<(RigId, DeclaredLoss)>,
    nodes: Vec<NodeInputs>,
) {
    let (mut chunks_open, mut published_open, mut losses_open) = (true, true, true);
    while chunks_open || published_open || losses_open {
        tokio::select! {
            chunk = chunk_rx.recv(), if chunks_open => match chunk {
                Some(chunk) => {
                    for (tx, _, _) in &nodes {
                        // A writer that died is reported when it is joined.
                        let _ = tx.send(chunk.clone()).await;
                    }
                }
                None => chunks_open = false,
            },
            published = published_rx.recv(), if published_open => match published {
                Some(p) => {
                    for (_, tx, _) in &nodes {
                        let _ = tx.send(p.clone()).await;
                    }
                }
                None => published_open = false,
            },
            loss = loss_rx.recv(), if losses_open => match loss {
                Some(l) => {
                    for (_, _, tx) in &nodes {
                        let _ = tx.send(l.clone()).await;
                    }
                }
                None => losses_open = false,
            },
        }
    }
}

type Changed<'a> = Pin<Box<dyn Future<Output = (usize, bool)> + Send + 'a>>;

/// Recomputes the minimum watermarks and the combined stats whenever a node's change, until
/// every writer has dropped its senders.
async fn combine(
    mut nodes: Vec<(
        String,
        watch::Receiver<Watermarks>,
        watch::Receiver<StoreStats>,
    )>,
    watermark_tx: watch::Sender<Watermarks>,
    stats_tx: watch::Sender<StoreStats>,
) {
    // Per node: its watermark and stats senders are still there.
    let mut open = vec![(true, true); nodes.len()];
    loop {
        let each: Vec<Watermarks> = nodes.iter().map(|(_, w, _)| w.borrow().clone()).collect();
        let watermarks = min_over_nodes(&each);
        watermark_tx.send_if_modified(|current| {
            if *current == watermarks {
                false
            } else {
                *current = watermarks;
                true
            }
        });
        let per_node: BTreeMap<String, StoreStats> = nodes
            .iter()
            .map(|(name, _, s)| (name.clone(), s.borrow().clone()))
            .collect();
        let combined = combine_stats(&per_node);
        stats_tx.send_if_modified(|current| {
            if *current == combined {
                false
            } else {
                *current = combined;
                true
            }
        });
        let mut changed: Vec<Changed<'_>> = Vec::new();
        for (i, (_, w, s)) in nodes.iter_mut().enumerate() {
            if open[i].0 {
                changed.push(Box::pin(async move { (2 * i, w.changed().await.is_ok()) }));
            }
            if open[i].1 {
                changed.push(Box::pin(
                    async move { (2 * i + 1, s.changed().await.is_ok()) },
                ));
            }
        }
        if changed.is_empty() {
            break;
        }
        let ((which, ok), _, rest) = futures::future::select_all(changed).await;
        drop(rest);
        if !ok {
            let node = &mut open[which / 2];
            if which % 2 == 0 {
                node.0 = false;
            } else {
                node.1 = false;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rig(name: &str) -> RigId {
        RigId::new(name).unwrap()
    }

    fn wm(pairs: &[(&str, u64)]) -> Watermarks {
        pairs.iter().map(|(r, w)| (rig(r), *w)).collect()
    }

    #[test]
    fn the_published_watermark_is_the_lowest_node_watermark() {
        let a = wm(&[("r1", 100), ("r2", 7), ("r3", 5)]);
        let b = wm(&[("r1", 40), ("r2", 9)]);
        // r3: node b has stored nothing of it yet, so no node-wide watermark exists.
        assert_eq!(min_over_nodes([&a, &b]), wm(&[("r1", 40), ("r2", 7)]));
        assert_eq!(min_over_nodes([&b, &a]), min_over_nodes([&a, &b]));
        assert_eq!(min_over_nodes([&a]), a);
        assert_eq!(
            min_over_nodes(std::iter::empty::<&Watermarks>()),
            Watermarks::new()
        );
        // A node that is down holds the minimum however far the other gets.
        let a_later = wm(&[("r1", 10_000), ("r2", 10_000), ("r3", 10_000)]);
        assert_eq!(min_over_nodes([&a_later, &b]), wm(&[("r1", 40), ("r2", 9)]));
    }

    fn node_stats(persisted: Option<u64>, stored: u64, failing: bool) -> StoreStats {
        let mut s = StoreStats {
            lines_written_total: stored * 2,
            storage_failing: failing,
            last_error: failing.then(|| "connection refused".to_owned()),
            batches_spooled: u64::from(failing) * 3,
            ..StoreStats::default()
        };
        let r = s.rigs.entry(rig("r1")).or_default();
        r.persisted_seq = persisted;
        r.blocks_stored = stored;
        r.samples_stored = stored * 100;
        r.backlog_s = if failing { 12.5 } else { 0.0 };
        r.loss_declarations_total = 1;
        r.blocks_lost_at_edge.insert("spool_full".into(), 4);
        if failing {
            r.blocks_dropped.insert("spool_full".into(), 2);
        }
        s
    }

    #[test]
    fn combined_stats_name_the_failing_node_and_keep_each_nodes_accounting() {
        let mut nodes = BTreeMap::new();
        nodes.insert("a".to_owned(), node_stats(Some(500), 500, false));
        nodes.insert("b".to_owned(), node_stats(Some(120), 120, true));
        let c = combine_stats(&nodes);
        assert!(c.storage_failing);
        assert_eq!(c.last_error.as_deref(), Some("node b: connection refused"));
        assert_eq!(c.lines_written_total, 1240);
        assert_eq!(c.batches_spooled, 3);
        let r = &c.rigs[&rig("r1")];
        assert_eq!(r.persisted_seq, Some(120));
        assert_eq!(r.blocks_stored, 120);
        assert_eq!(r.samples_stored, 12_000);
        assert_eq!(r.backlog_s, 12.5);
        assert_eq!(r.blocks_dropped["spool_full"], 2);
        // Declared once by the edge, seen by both nodes: counted once.
        assert_eq!(r.blocks_lost_at_edge["spool_full"], 4);
        assert_eq!(r.loss_declarations_total, 1);
        assert_eq!(c.nodes, nodes);
        // A rig only one node has seen has no node-wide watermark.
        nodes.get_mut("a").unwrap().rigs.insert(
            rig("r2"),
            RigStoreStats {
                persisted_seq: Some(9),
                blocks_stored: 9,
                ..RigStoreStats::default()
            },
        );
        let c = combine_stats(&nodes);
        assert_eq!(c.rigs[&rig("r2")].persisted_seq, None);
        assert_eq!(c.rigs[&rig("r2")].blocks_stored, 0);
    }

    #[test]
    fn one_node_combines_to_its_own_stats() {
        let mut nodes = BTreeMap::new();
        let s = node_stats(Some(7), 7, true);
        nodes.insert("influx_v1".to_owned(), s.clone());
        let mut c = combine_stats(&nodes);
        assert_eq!(
            c.last_error.as_deref(),
            Some("node influx_v1: connection refused")
        );
        c.last_error = s.last_error.clone();
        c.nodes.clear();
        assert_eq!(c, s);
    }
}
