//! Fuzz target `decode`: arbitrary bytes into the `Deframer` (edge- and firmware-sized) and the
//! `FirmwareCodec`. Checks that nothing panics, that every input byte is accounted for as
//! accepted or dropped (PROTOCOL.md §6.5), that both paths agree, and that every frame that
//! decodes re-encodes to itself.

#![no_main]

use bytes::BytesMut;
use dtop_firmware::codec::FirmwareCodec;
use dtop_firmware::{Deframer, Frame, MAX_ENCODED_FRAME_LEN};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so the fuzzer also explores split points.
    let (read_len, bytes) = match data.split_first() {
        Some((&first, rest)) => (usize::from(first).max(1), rest),
        None => (1, data),
    };

    let mut edge = Deframer::<MAX_ENCODED_FRAME_LEN>::new();
    let mut firmware = Deframer::<32>::new();
    let mut edge_frames = Vec::new();
    for read in bytes.chunks(read_len) {
        let mut rest = read;
        while !rest.is_empty() {
            let (used, result) = edge.feed(rest);
            assert!(used > 0 && used <= rest.len(), "feed must make progress");
            if let Some(Ok(message)) = result {
                edge_frames.push(Frame::from(message));
            }
            rest = &rest[used..];
        }
        for &byte in read {
            let _ = firmware.push(byte);
        }
    }
    edge.finish();
    firmware.finish();
    for (accepted, dropped) in [
        (edge.accepted_bytes_total(), edge.dropped_bytes_total()),
        (
            firmware.accepted_bytes_total(),
            firmware.dropped_bytes_total(),
        ),
    ] {
        assert_eq!(
            accepted + dropped,
            bytes.len() as u64,
            "every byte accounted for"
        );
    }

    let mut codec = FirmwareCodec::new();
    let mut src = BytesMut::from(bytes);
    let mut codec_frames = Vec::new();
    while let Some(frame) = codec
        .decode_eof(&mut src)
        .expect("garbage is never an error")
    {
        codec_frames.push(frame);
    }
    assert!(src.is_empty());
    assert_eq!(codec_frames, edge_frames, "codec and deframer agree");
    assert_eq!(codec.bad_frames_total(), edge.bad_frames_total());
    assert_eq!(
        codec.accepted_bytes_total() + codec.dropped_bytes_total(),
        bytes.len() as u64
    );

    for frame in &codec_frames {
        let wire = frame.to_wire().expect("a decoded frame re-encodes");
        let mut again = FirmwareCodec::new();
        let decoded = again
            .decode(&mut BytesMut::from(&wire[..]))
            .expect("garbage is never an error");
        assert_eq!(
            decoded.as_ref(),
            Some(frame),
            "re-encoded frame decodes to itself"
        );
    }
});
