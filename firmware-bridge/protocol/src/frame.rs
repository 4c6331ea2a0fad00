//! Framing (PROTOCOL.md §3): `COBS([version][type][payload][CRC-32C LE]) 0x00`.
//! Owns byte stuffing, the CRC and the frame-level checks of §6.3. Payload layouts belong to
//! `message.rs`. Everything here writes into caller buffers and never allocates.

use core::fmt;

use crc::{CRC_32_ISCSI, Crc, Table};

use crate::message::{
    BufferFull, EncodeError, MAX_PAYLOAD_LEN, Message, MessageType, PROTOCOL_VERSION, PayloadError,
    Sink,
};

/// Frame delimiter; never occurs inside an encoded frame (PROTOCOL.md §3.1).
pub const DELIMITER: u8 = 0x00;

/// `version` + `type` bytes before the payload (PROTOCOL.md §3.2).
pub const FRAME_HEADER_LEN: usize = 2;

/// CRC bytes after the payload (PROTOCOL.md §3.2).
pub const CRC_LEN: usize = 4;

/// Shortest raw frame: header and CRC around an empty payload (PROTOCOL.md §6.3).
pub const MIN_FRAME_LEN: usize = FRAME_HEADER_LEN + CRC_LEN;

/// Longest raw frame, before COBS (PROTOCOL.md §5).
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_PAYLOAD_LEN + CRC_LEN;

/// Longest COBS-encoded frame, without the delimiter; the edge's receive buffer
/// (PROTOCOL.md §5).
pub const MAX_ENCODED_FRAME_LEN: usize = cobs_max_encoded_len(MAX_FRAME_LEN);

/// Longest frame on the wire, delimiter included (PROTOCOL.md §5).
pub const MAX_WIRE_FRAME_LEN: usize = MAX_ENCODED_FRAME_LEN + 1;

/// Upper bound of COBS output for `len` input bytes: one code byte per started 254-byte block
/// (PROTOCOL.md §5).
pub const fn cobs_max_encoded_len(len: usize) -> usize {
    if len == 0 { 1 } else { len + len.div_ceil(254) }
}

/// Upper bound of the wire size of a frame with a `payload_len`-byte payload, delimiter
/// included; size `encode_frame` buffers with this.
pub const fn max_wire_len(payload_len: usize) -> usize {
    cobs_max_encoded_len(FRAME_HEADER_LEN + payload_len + CRC_LEN) + 1
}

// The edge streams ~1 MB/s at most, where slice-by-16 pays off; firmware keeps the 1 KiB table
// because flash matters more there than CRC speed.
#[cfg(feature = "std")]
type CrcTable = Table<16>;
#[cfg(not(feature = "std"))]
type CrcTable = Table<1>;

/// CRC-32C (Castagnoli, a.k.a. CRC-32/ISCSI), PROTOCOL.md §3.2.
static CRC32C: Crc<u32, CrcTable> = Crc::<u32, CrcTable>::new(&CRC_32_ISCSI);

/// CRC-32C of `bytes` (PROTOCOL.md §3.2).
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

/// Why received bytes are not a valid frame (PROTOCOL.md §6.3). Every variant means "drop it
/// and count it"; the variants exist so the edge can log why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More bytes than the receive buffer holds, or a raw frame above `MAX_FRAME_LEN`.
    Oversized,
    /// Not valid COBS.
    Cobs,
    /// A raw frame shorter than `MIN_FRAME_LEN`.
    Truncated { len: usize },
    /// The CRC in the frame does not match the bytes.
    BadCrc { received: u32, computed: u32 },
    /// A protocol version other than `PROTOCOL_VERSION` (PROTOCOL.md §2.2).
    WrongVersion { version: u8 },
    /// A type code PROTOCOL.md §4 does not define.
    UnknownType { code: u8 },
    /// The payload does not fit its type's layout or rules.
    Payload {
        message_type: MessageType,
        error: PayloadError,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversized => f.write_str("frame exceeds the receive buffer"),
            Self::Cobs => f.write_str("frame is not valid COBS"),
            Self::Truncated { len } => {
                write!(f, "frame of {len} bytes is shorter than {MIN_FRAME_LEN}")
            }
            Self::BadCrc { received, computed } => write!(
                f,
                "CRC mismatch: frame says {received:#010x}, bytes give {computed:#010x}"
            ),
            Self::WrongVersion { version } => {
                write!(f, "protocol version {version}, expected {PROTOCOL_VERSION}")
            }
            Self::UnknownType { code } => write!(f, "unknown message type {code:#04x}"),
            Self::Payload {
                message_type,
                error,
            } => write!(f, "bad {message_type:?} payload: {error}"),
        }
    }
}

impl core::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::Payload { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Encodes `message` as a complete wire frame, delimiter included, into `out`; returns the
/// bytes written. `out` of `max_wire_len(message.payload_len())` bytes always suffices.
pub fn encode_frame(message: &Message<'_>, out: &mut [u8]) -> Result<usize, EncodeError> {
    message.validate().map_err(EncodeError::Invalid)?;
    let payload_len = message.payload_len();
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(EncodeError::Invalid(PayloadError::TooLarge {
            len: payload_len,
        }));
    }
    let mut sink = FrameSink {
        cobs: CobsWriter::new(out)?,
        digest: CRC32C.digest(),
    };
    sink.put(&[PROTOCOL_VERSION, message.message_type().code()])?;
    message.write_payload(&mut sink)?;
    let FrameSink { mut cobs, digest } = sink;
    cobs.write(&digest.finalize().to_le_bytes())?;
    let len = cobs.finish();
    *out.get_mut(len).ok_or(EncodeError::BufferTooSmall)? = DELIMITER;
    Ok(len + 1)
}

/// Checks and decodes a raw (already COBS-decoded) frame, in the order of PROTOCOL.md §6.3.
pub fn decode_raw_frame(raw: &[u8]) -> Result<Message<'_>, FrameError> {
    if raw.len() < MIN_FRAME_LEN {
        return Err(FrameError::Truncated { len: raw.len() });
    }
    if raw.len() > MAX_FRAME_LEN {
        return Err(FrameError::Oversized);
    }
    let (body, crc) = raw.split_at(raw.len() - CRC_LEN);
    let received = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c(body);
    if received != computed {
        return Err(FrameError::BadCrc { received, computed });
    }
    let (version, code, payload) = (body[0], body[1], &body[FRAME_HEADER_LEN..]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::WrongVersion { version });
    }
    let message_type = MessageType::from_code(code).ok_or(FrameError::UnknownType { code })?;
    Message::decode_payload(message_type, payload).map_err(|error| FrameError::Payload {
        message_type,
        error,
    })
}

/// Decodes one COBS-encoded frame (without its delimiter) through `scratch`, which needs
/// `encoded.len()` bytes at most (`MAX_FRAME_LEN` for any valid frame).
pub fn decode_frame<'s>(encoded: &[u8], scratch: &'s mut [u8]) -> Result<Message<'s>, FrameError> {
    let len = cobs_decode(encoded, scratch)?;
    decode_raw_frame(&scratch[..len])
}

/// COBS-encodes `src` into `dst` without a delimiter; returns the bytes written
/// (at most `cobs_max_encoded_len(src.len())`).
pub fn cobs_encode(src: &[u8], dst: &mut [u8]) -> Result<usize, EncodeError> {
    let mut cobs = CobsWriter::new(dst)?;
    cobs.write(src)?;
    Ok(cobs.finish())
}

/// COBS-decodes `src` (no delimiter) into `dst`; returns the bytes written.
/// `FrameError::Oversized` if `dst` is too small.
pub fn cobs_decode(src: &[u8], dst: &mut [u8]) -> Result<usize, FrameError> {
    let (mut read, mut written) = (0, 0);
    while read < src.len() {
        let code = usize::from(src[read]);
        read += 1;
        let block = src
            .get(read..read + code.saturating_sub(1))
            .filter(|_| code != 0)
            .ok_or(FrameError::Cobs)?;
        if block.contains(&DELIMITER) {
            return Err(FrameError::Cobs);
        }
        dst.get_mut(written..written + block.len())
            .ok_or(FrameError::Oversized)?
            .copy_from_slice(block);
        written += block.len();
        read += block.len();
        if code != 0xFF && read < src.len() {
            *dst.get_mut(written).ok_or(FrameError::Oversized)? = 0;
            written += 1;
        }
    }
    Ok(written)
}

/// COBS-decodes `buf` (no delimiter) onto itself; returns the decoded length. Decoded data is
/// never longer than its encoding, so the write position never overtakes the read position.
pub fn cobs_decode_in_place(buf: &mut [u8]) -> Result<usize, FrameError> {
    let (mut read, mut written) = (0, 0);
    while read < buf.len() {
        let code = usize::from(buf[read]);
        read += 1;
        let end = read + code.saturating_sub(1);
        if code == 0 || end > buf.len() || buf[read..end].contains(&DELIMITER) {
            return Err(FrameError::Cobs);
        }
        buf.copy_within(read..end, written);
        written += end - read;
        read = end;
        if code != 0xFF && read < buf.len() {
            buf[written] = 0;
            written += 1;
        }
    }
    Ok(written)
}

/// Streaming COBS encoder into a slice. Blocks that end with a full 254-byte run are closed
/// lazily, so no trailing `0x01` follows them (PROTOCOL.md §3.1).
struct CobsWriter<'o> {
    out: &'o mut [u8],
    /// Next free byte.
    pos: usize,
    /// Where the current block's code byte goes.
    code_at: usize,
    /// Current block's code: 1 + data bytes so far.
    code: u8,
}

impl<'o> CobsWriter<'o> {
    fn new(out: &'o mut [u8]) -> Result<Self, BufferFull> {
        if out.is_empty() {
            return Err(BufferFull);
        }
        Ok(Self {
            out,
            pos: 1,
            code_at: 0,
            code: 1,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), BufferFull> {
        while !bytes.is_empty() {
            if self.code == 0xFF {
                self.close_block()?;
            }
            let room = usize::from(0xFF - self.code);
            let window = &bytes[..room.min(bytes.len())];
            let run = window.iter().position(|&b| b == 0).unwrap_or(window.len());
            self.out
                .get_mut(self.pos..self.pos + run)
                .ok_or(BufferFull)?
                .copy_from_slice(&bytes[..run]);
            self.pos += run;
            // `run <= room = 0xFF - code`, so this stays within u8.
            self.code += run as u8;
            bytes = &bytes[run..];
            if bytes.first() == Some(&0) {
                // A full block (code 0xFF) implies no zero, so the zero needs a block of its own.
                if self.code == 0xFF {
                    self.close_block()?;
                }
                self.close_block()?;
                bytes = &bytes[1..];
            }
        }
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), BufferFull> {
        self.out[self.code_at] = self.code;
        if self.pos >= self.out.len() {
            return Err(BufferFull);
        }
        self.code_at = self.pos;
        self.pos += 1;
        self.code = 1;
        Ok(())
    }

    fn finish(self) -> usize {
        self.out[self.code_at] = self.code;
        self.pos
    }
}

/// Feeds payload bytes to the CRC and the COBS stage at once, so a frame is encoded in one
/// pass without a scratch copy.
struct FrameSink<'o> {
    cobs: CobsWriter<'o>,
    digest: crc::Digest<'static, u32, CrcTable>,
}

impl Sink for FrameSink<'_> {
    type Error = BufferFull;

    fn put(&mut self, bytes: &[u8]) -> Result<(), BufferFull> {
        self.digest.update(bytes);
        self.cobs.write(bytes)
    }
}

impl From<BufferFull> for EncodeError {
    fn from(_: BufferFull) -> Self {
        Self::BufferTooSmall
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_zero_right_after_a_full_254_byte_run_survives_cobs() {
        // Found by proptest: 254 non-zero bytes then 0x00. A 0xFF block carries no implied
        // zero, so the encoder must emit an extra block for that zero.
        for tail in [&[][..], &[0x00][..], &[0x00, 0x07][..], &[0x00, 0x00][..]] {
            let src: Vec<u8> = std::iter::repeat_n(0x11, 254)
                .chain(tail.iter().copied())
                .collect();
            let mut enc = vec![0; src.len() + 8];
            let n = cobs_encode(&src, &mut enc).unwrap();
            assert!(!enc[..n].contains(&0), "encoding contains a delimiter");
            let mut dec = vec![0; src.len() + 8];
            let m = cobs_decode(&enc[..n], &mut dec).unwrap();
            assert_eq!(&dec[..m], &src[..], "tail {tail:?}");
            let mut in_place = enc[..n].to_vec();
            let k = cobs_decode_in_place(&mut in_place).unwrap();
            assert_eq!(&in_place[..k], &src[..], "in place, tail {tail:?}");
        }
    }
    use super::*;
    use crate::message::{ActuatorCommand, Heartbeat, SamplesView};

    fn cobs(src: &[u8]) -> Vec<u8> {
        let mut out = vec![0; cobs_max_encoded_len(src.len())];
        let n = cobs_encode(src, &mut out).unwrap();
        out.truncate(n);
        out
    }

    fn wire(message: &Message<'_>) -> Vec<u8> {
        let mut out = vec![0; max_wire_len(message.payload_len())];
        let n = encode_frame(message, &mut out).unwrap();
        out.truncate(n);
        out
    }

    #[test]
    fn crc32c_matches_the_catalogue_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn sizes_match_protocol_section_5() {
        assert_eq!(MAX_FRAME_LEN, 1030);
        assert_eq!(MAX_ENCODED_FRAME_LEN, 1035);
        assert_eq!(MAX_WIRE_FRAME_LEN, 1036);
        assert_eq!(max_wire_len(12), 20); // Heartbeat, the largest edge → firmware frame
    }

    #[test]
    fn cobs_matches_the_reference_vectors() {
        // Vectors from the COBS article on Wikipedia (delimiter not included).
        let big: Vec<u8> = (1..=0xFF).collect();
        let cases: [(Vec<u8>, Vec<u8>); 7] = [
            (vec![], vec![0x01]),
            (vec![0x00], vec![0x01, 0x01]),
            (vec![0x00, 0x00], vec![0x01, 0x01, 0x01]),
            (vec![0x00, 0x11, 0x00], vec![0x01, 0x02, 0x11, 0x01]),
            (
                vec![0x11, 0x22, 0x00, 0x33],
                vec![0x03, 0x11, 0x22, 0x02, 0x33],
            ),
            // 254 non-zero bytes: one full block and no trailing 0x01.
            (big[..254].to_vec(), [&[0xFF][..], &big[..254]].concat()),
            // 255 non-zero bytes: a full block, then a block of one.
            (
                big.clone(),
                [&[0xFF][..], &big[..254], &[0x02, 0xFF]].concat(),
            ),
        ];
        for (raw, encoded) in cases {
            assert_eq!(cobs(&raw), encoded, "encoding {raw:02x?}");
            let mut back = vec![0; raw.len()];
            assert_eq!(cobs_decode(&encoded, &mut back), Ok(raw.len()));
            assert_eq!(back, raw);
            let mut in_place = encoded.clone();
            let n = cobs_decode_in_place(&mut in_place).unwrap();
            assert_eq!(&in_place[..n], &raw[..]);
        }
    }

    #[test]
    fn cobs_decoder_accepts_a_trailing_empty_block_after_a_full_one() {
        let data = [0x42u8; 254];
        let encoded = [&[0xFF][..], &data, &[0x01]].concat();
        let mut out = [0u8; 300];
        assert_eq!(cobs_decode(&encoded, &mut out), Ok(254));
        assert_eq!(&out[..254], &data[..]);
    }

    #[test]
    fn cobs_decoder_rejects_overrunning_codes_and_embedded_zeros() {
        let mut out = [0u8; 16];
        assert_eq!(cobs_decode(&[0x05, 1, 2], &mut out), Err(FrameError::Cobs));
        assert_eq!(cobs_decode(&[0x03, 1, 0], &mut out), Err(FrameError::Cobs));
        assert_eq!(cobs_decode(&[0x00], &mut out), Err(FrameError::Cobs));
        assert_eq!(
            cobs_decode_in_place(&mut [0x05, 1, 2]),
            Err(FrameError::Cobs)
        );
        assert_eq!(
            cobs_decode(&[0x03, 1, 2], &mut [0u8; 1]),
            Err(FrameError::Oversized)
        );
    }

    #[test]
    fn hello_frame_matches_protocol_section_3_3() {
        #[rustfmt::skip]
        let expected = [
            0x07,                   // COBS code: 6 data bytes, then the end
            0x02,                   // version 2
            0x01,                   // type Hello
            0x3f, 0xc4, 0x4f, 0x24, // CRC-32C of [02 01], LE
            0x00,                   // delimiter
        ];
        assert_eq!(wire(&Message::Hello), expected);
    }

    #[test]
    fn heartbeat_frame_matches_protocol_section_3_3() {
        let heartbeat = Message::Heartbeat(Heartbeat {
            uptime_ms: 1500,
            sample_index: 1000,
        });
        #[rustfmt::skip]
        let expected = [
            0x05,                   // COBS code: 4 data bytes, then a zero
            0x02,                   // version 2
            0x30,                   // type Heartbeat
            0xdc, 0x05,             // uptime_ms 1500, low bytes
            0x01,                   // COBS code: zero follows directly
            0x03,                   // COBS code: 2 data bytes, then a zero
            0xe8, 0x03,             // sample_index 1000, low bytes
            0x01, 0x01, 0x01, 0x01, 0x01, // COBS codes: five more zero bytes
            0x05,                   // COBS code: 4 data bytes, then the end
            0xa4, 0xc9, 0x68, 0x3c, // CRC-32C, LE
            0x00,                   // delimiter
        ];
        assert_eq!(wire(&heartbeat), expected);
        let mut scratch = [0u8; MAX_FRAME_LEN];
        assert_eq!(
            decode_frame(&expected[..expected.len() - 1], &mut scratch),
            Ok(heartbeat)
        );
    }

    #[test]
    fn actuator_command_frame_matches_protocol_section_3_3() {
        let command = Message::ActuatorCommand(ActuatorCommand {
            seq: 7,
            enable: true,
            force_n: 2.5,
            origin_sample_index: 993,
        });
        #[rustfmt::skip]
        let expected = [
            0x04,                   // COBS code: 3 data bytes, then a zero (seq high byte)
            0x02, 0x20, 0x07,       // version 2, type ActuatorCommand, seq low byte
            0x02,                   // COBS code: 1 data byte, then a zero (force_n byte 0)
            0x01,                   // enable = 1
            0x01,                   // COBS code: no data, then a zero (force_n byte 1)
            0x05,                   // COBS code: 4 data bytes, then a zero
            0x20, 0x40,             // force_n 2.5, high bytes
            0xe1, 0x03,             // origin_sample_index 993, low bytes
            0x01, 0x01, 0x01, 0x01, 0x01, // COBS codes: five more zero bytes
            0x05,                   // COBS code: 4 data bytes, then the end
            0x4e, 0x24, 0x83, 0x57, // CRC-32C, LE
            0x00,                   // delimiter
        ];
        assert_eq!(wire(&command), expected);
    }

    #[test]
    fn raw_frame_checks_run_in_section_6_3_order() {
        let mut frame = [0x02u8, 0x01, 0, 0, 0, 0];
        let crc = crc32c(&frame[..2]);
        frame[2..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_raw_frame(&frame), Ok(Message::Hello));
        assert_eq!(
            decode_raw_frame(&frame[..5]),
            Err(FrameError::Truncated { len: 5 })
        );

        let mut bad_crc = frame;
        bad_crc[5] ^= 0x80;
        assert!(matches!(
            decode_raw_frame(&bad_crc),
            Err(FrameError::BadCrc { .. })
        ));

        let with_crc = |body: &[u8]| [body, &crc32c(body).to_le_bytes()].concat();
        assert_eq!(
            decode_raw_frame(&with_crc(&[0x01, 0x01])),
            Err(FrameError::WrongVersion { version: 1 })
        );
        assert_eq!(
            decode_raw_frame(&with_crc(&[0x02, 0x03])),
            Err(FrameError::UnknownType { code: 3 })
        );
        assert_eq!(
            decode_raw_frame(&with_crc(&[0x02, 0x30, 0x00])),
            Err(FrameError::Payload {
                message_type: MessageType::Heartbeat,
                error: PayloadError::BadLength { len: 1 }
            })
        );
        let oversized = with_crc(&[0x01; MAX_FRAME_LEN - CRC_LEN + 1]);
        assert_eq!(decode_raw_frame(&oversized), Err(FrameError::Oversized));
    }

    #[test]
    fn encode_frame_reports_a_short_buffer_at_every_length() {
        let values = [7i32; 40];
        let samples = Message::Samples(SamplesView::from_values(3, 4, &values).unwrap());
        let full = wire(&samples);
        for len in 0..full.len() {
            let mut out = vec![0; len];
            assert_eq!(
                encode_frame(&samples, &mut out),
                Err(EncodeError::BufferTooSmall),
                "buffer of {len}"
            );
        }
    }

    #[test]
    fn largest_samples_frame_fits_max_wire_frame_len() {
        // Worst case for COBS: no zero bytes anywhere.
        let values = [0x0101_0101i32; crate::message::MAX_SAMPLE_VALUES];
        let samples = SamplesView::from_values(u64::MAX, 1, &values).unwrap();
        let mut out = [0u8; MAX_WIRE_FRAME_LEN];
        let n = encode_frame(&Message::Samples(samples), &mut out).unwrap();
        assert!(n <= MAX_WIRE_FRAME_LEN);
        let mut scratch = [0u8; MAX_FRAME_LEN];
        assert_eq!(
            decode_frame(&out[..n - 1], &mut scratch),
            Ok(Message::Samples(samples))
        );
    }

    #[test]
    fn encode_frame_refuses_invalid_messages() {
        let command = Message::ActuatorCommand(ActuatorCommand {
            seq: 1,
            enable: true,
            force_n: f32::NAN,
            origin_sample_index: ActuatorCommand::NO_ORIGIN,
        });
        assert!(matches!(
            encode_frame(&command, &mut [0; 64]),
            Err(EncodeError::Invalid(PayloadError::NonFinite { .. }))
        ));
    }
}
