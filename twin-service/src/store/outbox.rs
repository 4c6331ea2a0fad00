//! Sealed batches waiting for storage: the newest in memory, older ones in the on-disk spool
//! (`dtop-spool`), always sent oldest first. Owns the spool; knows nothing of HTTP or time.
//!
//! Invariant: every spooled batch is older than every batch in memory, so "oldest" is the
//! spool's first record while it has one. Batches move from the front of memory to the back of
//! the spool, which keeps the order. A spool record is one batch: a JSON header (its lines and
//! [`BlockRef`]s) then the line-protocol body.

use std::collections::VecDeque;

use bytes::Bytes;
use dtop_spool::{Spool, SpoolError};
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::batch::BlockRef;

/// A batch closed for writing, with the id it is spooled under (strictly increasing, also
/// across restarts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub id: u64,
    pub body: Bytes,
    pub meta: Meta,
}

/// What a batch carries, without its body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub lines: u64,
    pub blocks: Vec<BlockRef>,
}

/// Why batches were given up.
pub const LOST_QUEUE_FULL: &str = "queue_full";
pub const LOST_SPOOL_FULL: &str = "spool_full";
pub const LOST_SPOOL_ERROR: &str = "spool_error";

/// The spool record of a batch: header length (u32 LE), JSON header, body.
pub fn encode_record(meta: &Meta, body: &[u8]) -> Vec<u8> {
    // Serializing plain data with string keys cannot fail.
    let header = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + header.len() + body.len());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

/// The inverse of [`encode_record`]; `None` for bytes it did not produce.
pub fn decode_record(bytes: &[u8]) -> Option<(Meta, Bytes)> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header = bytes.get(4..4 + len)?;
    let meta = serde_json::from_slice(header).ok()?;
    Some((meta, Bytes::copy_from_slice(&bytes[4 + len..])))
}

/// A batch that will never be written, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub meta: Meta,
    pub reason: &'static str,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    memory: VecDeque<Sealed>,
    /// Body bytes of the batches in memory.
    memory_bytes: u64,
    disk: Option<Disk>,
    next_id: u64,
}

#[derive(Debug)]
struct Disk {
    spool: Spool,
    /// Id and meta of every spooled batch, oldest first.
    index: VecDeque<(u64, Meta)>,
}

impl Outbox {
    /// Memory only.
    pub fn in_memory() -> Self {
        Self {
            memory: VecDeque::new(),
            memory_bytes: 0,
            disk: None,
            next_id: 1,
        }
    }

    /// With a disk spool; reads back the batches a previous run left in it. Records that do
    /// not decode are given up (acked) and returned as lost.
    pub fn with_spool(spool: Spool) -> Result<(Self, Vec<Lost>), SpoolError> {
        let mut index = VecDeque::new();
        let mut lost = Vec::new();
        let mut give_up_through = None;
        for record in spool.iter() {
            let record = record?;
            match decode_record(&record.payload) {
                Some((meta, _)) => index.push_back((record.seq, meta)),
                None => {
                    // Only possible with a foreign file in the directory; its content is unknown.
                    error!(
                        id = record.seq,
                        "A spooled batch does not decode; giving it up."
                    );
                    give_up_through = Some(record.seq);
                    lost.push(Lost {
                        meta: Meta::default(),
                        reason: LOST_SPOOL_ERROR,
                    });
                }
            }
        }
        let mut spool = spool;
        if let Some(seq) = give_up_through {
            // Giving up a bad record also gives up the good ones before it, so keep those: ack
            // only when it is the first.
            if index.front().is_none_or(|(id, _)| *id > seq) {
                spool.ack(seq)?;
            }
        }
        let next_id = spool.last_seq().map_or(1, |s| s.saturating_add(1));
        Ok((
            Self {
                memory: VecDeque::new(),
                memory_bytes: 0,
                disk: Some(Disk { spool, index }),
                next_id,
            },
            lost,
        ))
    }

    /// The id for the next sealed batch.
    pub fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn push(&mut self, sealed: Sealed) {
        self.memory_bytes += sealed.body.len() as u64;
        self.memory.push_back(sealed);
    }

    /// Body bytes of the batches in memory.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    pub fn memory_len(&self) -> usize {
        self.memory.len()
    }

    pub fn spooled_len(&self) -> usize {
        self.disk.as_ref().map_or(0, |d| d.index.len())
    }

    pub fn is_empty(&self) -> bool {
        self.memory.is_empty() && self.spooled_len() == 0
    }

    pub fn spool_bytes(&self) -> u64 {
        self.disk.as_ref().map_or(0, |d| d.spool.used_bytes())
    }

    pub fn has_spool(&self) -> bool {
        self.disk.is_some()
    }

    /// Every pending batch's meta, oldest first.
    pub fn metas(&self) -> impl Iterator<Item = &Meta> {
        let disk = self
            .disk
            .iter()
            .flat_map(|d| d.index.iter().map(|(_, m)| m));
        disk.chain(self.memory.iter().map(|s| &s.meta))
    }

    /// Moves batches from the front of memory to the spool until the bodies left in memory
    /// take at most `keep_bytes`. Without a spool, or when the spool refuses, batches are given
    /// up instead, oldest first, never the one `in_flight`.
    pub fn spill(&mut self, keep_bytes: u64, in_flight: Option<u64>) -> Vec<Lost> {
        let mut lost = Vec::new();
        while self.memory_bytes > keep_bytes && !self.memory.is_empty() {
            let front_in_flight = self.memory.front().map(|s| s.id) == in_flight;
            let Some(disk) = &mut self.disk else {
                let Some(s) = self.memory.remove(usize::from(front_in_flight)) else {
                    break;
                };
                self.memory_bytes -= s.body.len() as u64;
                lost.push(Lost {
                    meta: s.meta,
                    reason: LOST_QUEUE_FULL,
                });
                continue;
            };
            let Some(s) = self.memory.pop_front() else {
                break;
            };
            self.memory_bytes -= s.body.len() as u64;
            let e = match disk.spool.append(s.id, &encode_record(&s.meta, &s.body)) {
                Ok(appended) => {
                    // The spool is made to refuse, never to drop.
                    debug_assert!(appended.dropped.is_none());
                    disk.index.push_back((s.id, s.meta));
                    continue;
                }
                Err(e) => e,
            };
            let reason = match e {
                SpoolError::Full { .. } | SpoolError::RecordTooLarge { .. } => LOST_SPOOL_FULL,
                _ => LOST_SPOOL_ERROR,
            };
            let given_up = if front_in_flight {
                // Still being written: it stays; the next one is given up instead.
                self.memory_bytes += s.body.len() as u64;
                self.memory.push_front(s);
                let Some(next) = self.memory.remove(1) else {
                    break;
                };
                self.memory_bytes -= next.body.len() as u64;
                next
            } else {
                s
            };
            warn!(error = %e, id = given_up.id, "Could not spool a batch; giving it up.");
            lost.push(Lost {
                meta: given_up.meta,
                reason,
            });
        }
        lost
    }

    /// The oldest pending batch, to send. A spooled record that cannot be read is given up
    /// and returned as lost.
    pub fn oldest(&mut self) -> (Option<Sealed>, Vec<Lost>) {
        let mut lost = Vec::new();
        if let Some(disk) = &mut self.disk {
            while let Some((id, meta)) = disk.index.front().cloned() {
                let read = disk.spool.oldest();
                match read {
                    Ok(Some(record)) if record.seq == id => {
                        if let Some((_, body)) = decode_record(&record.payload) {
                            return (Some(Sealed { id, body, meta }), lost);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(error = %e, id, "Could not read a spooled batch; giving it up.")
                    }
                }
                disk.index.pop_front();
                if let Err(e) = disk.spool.ack(id) {
                    error!(error = %e, id, "Could not release a spooled batch.");
                }
                lost.push(Lost {
                    meta,
                    reason: LOST_SPOOL_ERROR,
                });
            }
        }
        (self.memory.front().cloned(), lost)
    }

    /// Removes batch `id` (written, or refused for good); returns its meta.
    pub fn complete(&mut self, id: u64) -> Option<Meta> {
        if self.memory.front().is_some_and(|s| s.id == id) {
            let s = self.memory.pop_front()?;
            self.memory_bytes -= s.body.len() as u64;
            return Some(s.meta);
        }
        let disk = self.disk.as_mut()?;
        if disk.index.front().is_none_or(|(i, _)| *i != id) {
            error!(id, "Completed a batch that is not the oldest pending one.");
            return None;
        }
        let (_, meta) = disk.index.pop_front()?;
        if let Err(e) = disk.spool.ack(id) {
            // It would be sent again after a restart: a harmless duplicate.
            error!(error = %e, id, "Could not release a spooled batch.");
        }
        Some(meta)
    }

    /// Fsyncs the spool (for the interval policy).
    pub fn sync(&mut self) {
        if let Some(disk) = &mut self.disk
            && let Err(e) = disk.spool.sync()
        {
            warn!(error = %e, "Could not fsync the storage spool.");
        }
    }

    /// Gives up every batch in memory (shutdown without a spool).
    pub fn drain_memory(&mut self) -> Vec<Meta> {
        self.memory_bytes = 0;
        self.memory.drain(..).map(|s| s.meta).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_proto::RigId;
    use dtop_spool::{FullPolicy, SpoolConfig};

    fn sealed(o: &mut Outbox, seq: u64) -> Sealed {
        Sealed {
            id: o.take_id(),
            body: Bytes::from(format!("m a={seq} {seq}\n")),
            meta: Meta {
                lines: 1,
                blocks: vec![BlockRef {
                    rig: RigId::new("r").unwrap(),
                    seq,
                    samples: 10,
                    span_ns: 10_000_000,
                    lines: 1,
                }],
            },
        }
    }

    fn spool(dir: &std::path::Path, capacity: u64) -> Spool {
        Spool::open(SpoolConfig::new(dir, capacity).with_full(FullPolicy::Refuse)).unwrap()
    }

    fn seq_of(s: &Sealed) -> u64 {
        s.meta.blocks[0].seq
    }

    #[test]
    fn records_round_trip() {
        let meta = Meta {
            lines: 3,
            blocks: vec![],
        };
        let rec = encode_record(&meta, b"a b c\n");
        let (m, body) = decode_record(&rec).unwrap();
        assert_eq!(m, meta);
        assert_eq!(&body[..], b"a b c\n");
        assert_eq!(decode_record(b"\x05\x00\x00\x00{}"), None);
    }

    #[test]
    fn memory_only_gives_up_the_oldest_not_in_flight() {
        let mut o = Outbox::in_memory();
        for seq in 1..=3 {
            let s = sealed(&mut o, seq);
            o.push(s);
        }
        // Bodies of 9 bytes: room for two.
        let lost = o.spill(18, Some(1));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].reason, LOST_QUEUE_FULL);
        assert_eq!(lost[0].meta.blocks[0].seq, 2);
        assert_eq!(seq_of(&o.oldest().0.unwrap()), 1);
    }

    #[test]
    fn spilled_batches_are_sent_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, lost) = Outbox::with_spool(spool(dir.path(), 1 << 20)).unwrap();
        assert!(lost.is_empty());
        for seq in 1..=4 {
            let s = sealed(&mut o, seq);
            o.push(s);
        }
        assert!(o.spill(9, None).is_empty());
        assert_eq!((o.spooled_len(), o.memory_len()), (3, 1));
        let first = o.oldest().0.unwrap();
        assert_eq!(seq_of(&first), 1);
        assert_eq!(o.complete(first.id).unwrap().blocks[0].seq, 1);
        drop(o);
        let (mut o, _) = Outbox::with_spool(spool(dir.path(), 1 << 20)).unwrap();
        let seqs: Vec<_> = o.metas().map(|m| m.blocks[0].seq).collect();
        assert_eq!(seqs, [2, 3]);
        // Ids continue above everything spooled (id 4 only ever lived in memory).
        assert_eq!(o.take_id(), 4);
    }

    #[test]
    fn an_in_flight_batch_moved_to_the_spool_completes_there() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, _) = Outbox::with_spool(spool(dir.path(), 1 << 20)).unwrap();
        let s = sealed(&mut o, 1);
        o.push(s);
        let in_flight = o.oldest().0.unwrap();
        let s = sealed(&mut o, 2);
        o.push(s);
        assert!(o.spill(0, Some(in_flight.id)).is_empty());
        assert_eq!(o.spooled_len(), 2);
        assert_eq!(o.complete(in_flight.id).unwrap().blocks[0].seq, 1);
        assert_eq!(seq_of(&o.oldest().0.unwrap()), 2);
    }

    #[test]
    fn a_full_spool_gives_up_batches_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, _) = Outbox::with_spool(spool(dir.path(), 4096)).unwrap();
        let big = Sealed {
            body: Bytes::from(vec![b'x'; 1500]),
            ..sealed(&mut o, 1)
        };
        o.push(big.clone());
        o.push(Sealed {
            id: o.next_id,
            ..big.clone()
        });
        o.next_id += 1;
        o.push(Sealed {
            id: o.next_id,
            ..big
        });
        o.next_id += 1;
        let lost = o.spill(0, None);
        // A quarter-capacity segment holds one 1.5 kB record; the spool holds two of them.
        assert!(!lost.is_empty());
        assert!(lost.iter().all(|l| l.reason == LOST_SPOOL_FULL));
        assert_eq!(o.spooled_len() + lost.len(), 3);
    }
}
