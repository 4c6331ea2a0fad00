//! Segment files: their names, and the pure scan that finds the intact records in a segment's
//! bytes and where its valid prefix ends. Knows nothing of capacity, acks or fsync.
//!
//! A segment is named after the seq of its first record, zero-padded so that names sort in seq
//! order: `00000000000000000042.seg`.

use crate::frame::{self, Decoded};

/// File name suffix of segments.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of the segment whose first record has `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq of a segment, from its file name; `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where one record sits in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub seq: u64,
    /// Offset of the frame (header) in the segment file.
    pub offset: u64,
    /// Frame bytes, header included.
    pub frame_bytes: u32,
}

/// Why a scan stopped before the end of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Every byte belonged to an intact record.
    Clean,
    /// The bytes end inside a record (a torn append).
    Torn,
    /// A header or payload failed its CRC, or a seq did not increase.
    Corrupt,
}

/// The intact prefix of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Located>,
    /// Length of the intact prefix; everything after it is to be truncated.
    pub valid_bytes: u64,
    pub tail: Tail,
}

/// Scans a segment's bytes from the start. Records must carry strictly increasing seqs above
/// `after_seq` (the last seq of the previous segment, if any); the first record that does not
/// ends the intact prefix like a bad CRC does.
pub fn scan(bytes: &[u8], after_seq: Option<u64>) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0usize;
    let mut last = after_seq;
    let tail = loop {
        if offset == bytes.len() {
            break Tail::Clean;
        }
        match frame::decode(&bytes[offset..]) {
            Decoded::Record {
                seq, frame_bytes, ..
            } => {
                if last.is_some_and(|l| seq <= l) {
                    break Tail::Corrupt;
                }
                records.push(Located {
                    seq,
                    offset: offset as u64,
                    // Bounded by HEADER_BYTES + MAX_PAYLOAD_BYTES, far below u32::MAX.
                    frame_bytes: frame_bytes as u32,
                });
                last = Some(seq);
                offset += frame_bytes;
            }
            Decoded::Partial => break Tail::Torn,
            Decoded::Corrupt => break Tail::Corrupt,
        }
    };
    Scan {
        records,
        valid_bytes: offset as u64,
        tail,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_seq_order_and_parse_back() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.seg");
        assert!(file_name(9) < file_name(10));
        for seq in [0, 1, 42, u64::MAX] {
            assert_eq!(parse_file_name(&file_name(seq)), Some(seq));
        }
    }

    #[test]
    fn ignores_files_that_are_not_segments() {
        for name in [
            "ack",
            "lock",
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.seg.tmp",
            "99999999999999999999.seg",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    fn frames(seqs: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &s in seqs {
            frame::encode(&mut out, s, &s.to_le_bytes());
        }
        out
    }

    #[test]
    fn finds_every_record_of_a_clean_segment() {
        let bytes = frames(&[5, 6, 9]);
        let s = scan(&bytes, Some(4));
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.valid_bytes, bytes.len() as u64);
        let seqs: Vec<_> = s.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [5, 6, 9]);
        assert_eq!(s.records[1].offset, 24);
    }

    #[test]
    fn stops_at_a_torn_tail() {
        let bytes = frames(&[1, 2]);
        let s = scan(&bytes[..bytes.len() - 3], None);
        assert_eq!(s.tail, Tail::Torn);
        assert_eq!(s.valid_bytes, 24);
        assert_eq!(s.records.len(), 1);
    }

    #[test]
    fn a_seq_that_does_not_increase_ends_the_intact_prefix() {
        let bytes = frames(&[3, 4, 4, 5]);
        let s = scan(&bytes, None);
        assert_eq!(s.tail, Tail::Corrupt);
        assert_eq!(s.records.len(), 2);
        assert_eq!(scan(&frames(&[3]), Some(3)).tail, Tail::Corrupt);
    }
}
