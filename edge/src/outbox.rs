//! Blocks between the batcher and the broker's PUBACK: a bounded in-memory queue, the in-flight
//! window, and what to send again after a lost connection. Pure; the publisher does the I/O.
//! With the on-disk spool ([`crate::backlog`]) this is flow control only: what it forgets on a
//! lost connection is replayed from the spool.

use std::collections::{BTreeMap, VecDeque};

use dtop_proto::v1::SampleBlock;

/// A non-block publish the outbox tracks so packet ids stay matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Birth,
    Death,
    /// A `CommandAck` on cmd/ack.
    Ack,
    /// A `SeqLoss` on loss.
    Loss,
}

/// What a QoS 1 publish carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Tag {
    Block(SampleBlock),
    Control(Control),
}

/// What a PUBACK acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub enum Acked {
    Block { seq: u64, samples: usize },
    Control(Control),
}

#[derive(Debug, Clone)]
pub struct Outbox {
    /// Waiting for the connection or the window, oldest first.
    queue: VecDeque<SampleBlock>,
    /// Given to the MQTT client, whose packet id we learn from its next `Outgoing::Publish`
    /// event; the client assigns ids in the order it receives requests.
    handed: VecDeque<Tag>,
    /// Sent, awaiting PUBACK, by packet id.
    inflight: BTreeMap<u16, Tag>,
    max_queued: usize,
    window: usize,
}

impl Outbox {
    /// Holds at most `max_queued` waiting blocks and `window` unacknowledged ones.
    pub fn new(max_queued: usize, window: usize) -> Self {
        Self {
            queue: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: BTreeMap::new(),
            max_queued: max_queued.max(1),
            window: window.max(1),
        }
    }

    /// Queues a block; returns the oldest waiting blocks it pushed out, if the queue was full.
    pub fn push(&mut self, block: SampleBlock) -> Vec<SampleBlock> {
        self.queue.push_back(block);
        self.enforce_bound()
    }

    /// The next block to publish, if the window has room. Stamp it, publish it, then call
    /// [`Outbox::mark_block_handed`]; if publishing fails, leave it here.
    pub fn next_block(&mut self) -> Option<&mut SampleBlock> {
        if self.blocks_unacked() >= self.window {
            return None;
        }
        self.queue.front_mut()
    }

    /// Removes the block [`Outbox::next_block`] offered, unsent (it can never be published).
    pub fn discard_next(&mut self) -> Option<SampleBlock> {
        self.queue.pop_front()
    }

    /// The block from [`Outbox::next_block`] went to the client.
    pub fn mark_block_handed(&mut self) {
        if let Some(block) = self.queue.pop_front() {
            self.handed.push_back(Tag::Block(block));
        }
    }

    /// A control message went to the client.
    pub fn mark_control_handed(&mut self, control: Control) {
        self.handed.push_back(Tag::Control(control));
    }

    /// The client wrote the oldest handed publish with packet id `pkid`.
    pub fn on_outgoing_publish(&mut self, pkid: u16) {
        // QoS 0 publishes (the status) carry packet id 0 and are never acknowledged.
        if pkid == 0 {
            return;
        }
        if let Some(tag) = self.handed.pop_front() {
            self.inflight.insert(pkid, tag);
        }
    }

    /// The broker acknowledged `pkid`.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Acked> {
        Some(match self.inflight.remove(&pkid)? {
            Tag::Block(b) => Acked::Block {
                seq: b.seq,
                samples: crate::batcher::block_sample_count(&b),
            },
            Tag::Control(c) => Acked::Control(c),
        })
    }

    /// The connection is gone and with it (clean session) everything unacknowledged: put the
    /// blocks back at the head of the queue in seq order, marked as backfill. Control messages
    /// are dropped (a new birth follows the next CONNACK). Returns blocks the bound pushed out.
    pub fn on_connection_lost(&mut self) -> Vec<SampleBlock> {
        let mut unacked: Vec<SampleBlock> = std::mem::take(&mut self.inflight)
            .into_values()
            .chain(self.handed.drain(..))
            .filter_map(|tag| match tag {
                Tag::Block(b) => Some(b),
                Tag::Control(_) => None,
            })
            .collect();
        unacked.sort_by_key(|b| b.seq);
        for mut block in unacked.into_iter().rev() {
            block.backfill = true;
            self.queue.push_front(block);
        }
        self.enforce_bound()
    }

    /// Marks every waiting block as backfill (they are waiting out an outage).
    pub fn mark_waiting_as_backfill(&mut self) {
        for block in &mut self.queue {
            block.backfill = true;
        }
    }

    /// Removes and returns every block not yet acknowledged, in seq order (shutdown gave up).
    pub fn take_unacked_blocks(&mut self) -> Vec<SampleBlock> {
        let mut all = self.on_connection_lost();
        all.extend(self.queue.drain(..));
        all.sort_by_key(|b| b.seq);
        all
    }

    /// True when the death PUBACK or any other control publish is still outstanding.
    pub fn control_pending(&self, control: Control) -> bool {
        let is = |t: &Tag| *t == Tag::Control(control);
        self.handed.iter().any(is) || self.inflight.values().any(is)
    }

    /// Whether another block may be handed to the client now.
    pub fn window_has_room(&self) -> bool {
        self.blocks_unacked() < self.window
    }

    /// Blocks waiting in the queue (not yet handed to the client).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Blocks handed to the client and not yet acknowledged.
    pub fn blocks_unacked(&self) -> usize {
        let is_block = |t: &Tag| matches!(t, Tag::Block(_));
        self.handed.iter().filter(|t| is_block(t)).count()
            + self.inflight.values().filter(|t| is_block(t)).count()
    }

    /// No block waits or awaits a PUBACK.
    pub fn blocks_done(&self) -> bool {
        self.queue.is_empty() && self.blocks_unacked() == 0
    }

    fn enforce_bound(&mut self) -> Vec<SampleBlock> {
        let excess = self.queue.len().saturating_sub(self.max_queued);
        self.queue.drain(..excess).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seq: u64) -> SampleBlock {
        SampleBlock {
            seq,
            ..SampleBlock::default()
        }
    }

    fn hand_all(o: &mut Outbox) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(b) = o.next_block() {
            seqs.push(b.seq);
            o.mark_block_handed();
        }
        seqs
    }

    #[test]
    fn drops_the_oldest_block_when_the_queue_is_full() {
        let mut o = Outbox::new(2, 8);
        assert!(o.push(block(0)).is_empty());
        assert!(o.push(block(1)).is_empty());
        assert_eq!(o.push(block(2)), vec![block(0)]);
        assert_eq!(hand_all(&mut o), [1, 2]);
    }

    #[test]
    fn hands_out_no_more_than_the_window() {
        let mut o = Outbox::new(10, 2);
        for s in 0..4 {
            o.push(block(s));
        }
        assert_eq!(hand_all(&mut o), [0, 1]);
        o.on_outgoing_publish(1);
        o.on_outgoing_publish(2);
        assert_eq!(o.on_puback(1), Some(Acked::Block { seq: 0, samples: 0 }));
        assert_eq!(hand_all(&mut o), [2]);
        assert_eq!(o.on_puback(1), None);
    }

    #[test]
    fn matches_packet_ids_in_hand_over_order_across_controls() {
        let mut o = Outbox::new(10, 4);
        o.mark_control_handed(Control::Birth);
        o.push(block(5));
        hand_all(&mut o);
        o.on_outgoing_publish(7);
        o.on_outgoing_publish(8);
        assert_eq!(o.on_puback(8), Some(Acked::Block { seq: 5, samples: 0 }));
        assert_eq!(o.on_puback(7), Some(Acked::Control(Control::Birth)));
        assert!(o.blocks_done());
    }

    #[test]
    fn requeues_unacked_blocks_in_seq_order_as_backfill_after_a_lost_connection() {
        let mut o = Outbox::new(10, 3);
        for s in 0..5 {
            o.push(block(s));
        }
        hand_all(&mut o);
        o.mark_control_handed(Control::Birth);
        o.on_outgoing_publish(2);
        o.on_outgoing_publish(1);
        assert!(o.on_connection_lost().is_empty());
        assert!(!o.control_pending(Control::Birth));
        let mut order = Vec::new();
        while let Some(b) = o.next_block() {
            order.push((b.seq, b.backfill));
            o.mark_block_handed();
            o.on_outgoing_publish(9);
            o.on_puback(9);
        }
        assert_eq!(
            order,
            [(0, true), (1, true), (2, true), (3, false), (4, false)]
        );
    }

    #[test]
    fn the_bound_applies_to_requeued_blocks_too() {
        let mut o = Outbox::new(2, 2);
        o.push(block(0));
        o.push(block(1));
        hand_all(&mut o);
        o.push(block(2));
        o.push(block(3));
        assert_eq!(
            o.on_connection_lost()
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(
            o.take_unacked_blocks()
                .iter()
                .map(|b| b.seq)
                .collect::<Vec<_>>(),
            [2, 3]
        );
        assert!(o.blocks_done());
    }
}
