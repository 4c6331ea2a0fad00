//! The ack file's bytes: the persisted ack point. Pure; the spool writes it atomically
//! (temporary file, then rename).
//!
//! ```text
//! offset  size  field
//! 0       8     magic "DTOPACK1"
//! 8       8     acked seq, u64 little-endian
//! 16      4     CRC-32C over bytes 0..16, u32 little-endian
//! ```

use crc::{CRC_32_ISCSI, Crc};

/// Name of the ack file in the spool directory.
pub const FILE_NAME: &str = "ack";
/// Name the ack file is written under before it is renamed into place.
pub const TMP_FILE_NAME: &str = "ack.tmp";
const MAGIC: &[u8; 8] = b"DTOPACK1";
/// Size of the ack file.
pub const BYTES: usize = 20;

static CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

pub fn encode(acked_seq: u64) -> [u8; BYTES] {
    let mut out = [0u8; BYTES];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&acked_seq.to_le_bytes());
    let crc = CRC32C.checksum(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The acked seq, or `None` when the bytes are not an intact ack file.
pub fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != BYTES || &bytes[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    if CRC32C.checksum(&bytes[..16]) != crc {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[8..16]);
    Some(u64::from_le_bytes(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        for seq in [0, 1, u64::MAX] {
            assert_eq!(decode(&encode(seq)), Some(seq));
        }
        let good = encode(42);
        for i in 0..BYTES {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert_eq!(decode(&bad), None, "byte {i}");
        }
        assert_eq!(decode(&good[..BYTES - 1]), None);
        assert_eq!(decode(&[0; BYTES]), None);
    }
}
