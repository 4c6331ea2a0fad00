//! Record framing on disk: a 16-byte header (payload length, seq, CRC-32C) before each payload.
//! Pure: encodes into and decodes from byte slices; knows nothing of files.
//!
//! ```text
//! offset  size  field
//! 0       4     payload length, u32 little-endian (at most MAX_PAYLOAD_BYTES)
//! 4       8     seq, u64 little-endian
//! 12      4     CRC-32C (Castagnoli) over bytes 0..12 and the payload, u32 little-endian
//! 16      len   payload
//! ```
//!
//! The CRC covers the length and the seq as well as the payload, so a torn or zero-filled tail
//! (what a power loss leaves on most file systems) never decodes as a record.

use crc::{CRC_32_ISCSI, Crc};

/// Bytes before each payload.
pub const HEADER_BYTES: usize = 16;
/// Largest payload accepted; a length above it can only be a corrupt header.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// What decoding the bytes at the start of a slice found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record of `frame_bytes` bytes (header included).
    Record {
        seq: u64,
        payload: &'a [u8],
        frame_bytes: usize,
    },
    /// The slice ends inside a record: a torn write, or more bytes still to come.
    Partial,
    /// The bytes cannot start a record (bad CRC, impossible length).
    Corrupt,
}

/// Bytes a record of `payload_len` bytes takes on disk.
pub const fn frame_bytes(payload_len: usize) -> usize {
    HEADER_BYTES + payload_len
}

fn checksum(header12: &[u8], payload: &[u8]) -> u32 {
    let mut digest = CRC32C.digest();
    digest.update(header12);
    digest.update(payload);
    digest.finalize()
}

/// Appends the frame of one record to `out`. The caller bounds the payload by
/// [`MAX_PAYLOAD_BYTES`] (checked again here in debug builds).
pub fn encode(out: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
    // MAX_PAYLOAD_BYTES < u32::MAX, so the length fits.
    let len = payload.len() as u32;
    let start = out.len();
    out.reserve(frame_bytes(payload.len()));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let crc = checksum(&out[start..start + 12], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Decodes the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Decoded::Partial;
    };
    let le4 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let len = le4(&header[0..4]) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Decoded::Corrupt;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[4..12]);
    let seq = u64::from_le_bytes(seq);
    let crc = le4(&header[12..16]);
    let Some(payload) = bytes.get(HEADER_BYTES..HEADER_BYTES + len) else {
        return Decoded::Partial;
    };
    if checksum(&header[..12], payload) != crc {
        return Decoded::Corrupt;
    }
    Decoded::Record {
        seq,
        payload,
        frame_bytes: frame_bytes(len),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lays_out_the_header_as_documented() {
        let mut out = Vec::new();
        encode(&mut out, 0x0102_0304_0506_0708, b"ab");
        assert_eq!(out.len(), 18);
        // Length 2, little-endian.
        assert_eq!(&out[0..4], &[2, 0, 0, 0]);
        // Seq, little-endian.
        assert_eq!(&out[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
        // CRC-32C over the first 12 bytes and the payload.
        let mut covered = out[..12].to_vec();
        covered.extend_from_slice(b"ab");
        assert_eq!(
            u32::from_le_bytes(out[12..16].try_into().unwrap()),
            CRC32C.checksum(&covered)
        );
        assert_eq!(&out[16..], b"ab");
    }

    #[test]
    fn a_zero_filled_tail_is_corrupt_not_a_record() {
        assert_eq!(decode(&[0u8; 64]), Decoded::Corrupt);
    }

    #[test]
    fn an_impossible_length_is_corrupt_before_reading_the_payload() {
        let mut out = Vec::new();
        encode(&mut out, 1, b"x");
        out[0..4].copy_from_slice(&(MAX_PAYLOAD_BYTES as u32 + 1).to_le_bytes());
        assert_eq!(decode(&out), Decoded::Corrupt);
    }

    #[test]
    fn an_empty_payload_round_trips() {
        let mut out = Vec::new();
        encode(&mut out, 7, b"");
        assert_eq!(
            decode(&out),
            Decoded::Record {
                seq: 7,
                payload: b"",
                frame_bytes: 16
            }
        );
    }

    proptest! {
        #[test]
        fn records_round_trip_back_to_back(records in prop::collection::vec((any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)), 1..20)) {
            let mut out = Vec::new();
            for (seq, payload) in &records {
                encode(&mut out, *seq, payload);
            }
            let mut rest = &out[..];
            for (seq, payload) in &records {
                match decode(rest) {
                    Decoded::Record { seq: s, payload: p, frame_bytes } => {
                        prop_assert_eq!(s, *seq);
                        prop_assert_eq!(p, &payload[..]);
                        rest = &rest[frame_bytes..];
                    }
                    other => prop_assert!(false, "decoded {:?}", other),
                }
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn every_truncation_of_a_record_is_partial(seq in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..200), cut_frac in 0.0f64..1.0) {
            let mut out = Vec::new();
            encode(&mut out, seq, &payload);
            let cut = ((out.len() as f64) * cut_frac) as usize;
            prop_assert!(cut < out.len());
            // A cut inside the header, or a length that still fits: never a record.
            let d = decode(&out[..cut]);
            prop_assert!(matches!(d, Decoded::Partial), "cut {} gave {:?}", cut, d);
        }

        #[test]
        fn any_single_bit_flip_is_detected(seq in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..200), bit in any::<prop::sample::Index>()) {
            let mut out = Vec::new();
            encode(&mut out, seq, &payload);
            let bit = bit.index(out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            // A flipped length may also make the record look partial; it must never decode.
            let d = decode(&out);
            prop_assert!(!matches!(d, Decoded::Record { .. }), "flip {} gave {:?}", bit, d);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
            let _ = decode(&bytes);
        }
    }
}
