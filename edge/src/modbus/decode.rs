//! Pure conversions between Modbus words and numbers: decoding a register by type, word order and
//! byte order into its value and engineering value, the integer a `SampleBlock` carries for it,
//! and encoding a setpoint back into words. No I/O.

use crate::modbus::config::{ByteOrder, DataType, RegisterConfig, WordOrder};

/// The words of a value in most-significant-first order, whatever order the device uses.
fn canonical(words: &[u16], word_order: WordOrder, byte_order: ByteOrder) -> [u16; 4] {
    let mut out = [0u16; 4];
    let n = words.len().min(4);
    for (k, w) in words[..n].iter().enumerate() {
        let w = match byte_order {
            ByteOrder::Big => *w,
            ByteOrder::Little => w.swap_bytes(),
        };
        let at = match word_order {
            WordOrder::Big => k,
            WordOrder::Little => n - 1 - k,
        };
        out[at] = w;
    }
    out
}

/// The register's value (before scale and offset), from exactly `data_type.words()` words.
/// `None` when too few words are given. Bools read their first word as 0 / non-zero.
pub fn decode_value(
    words: &[u16],
    data_type: DataType,
    word_order: WordOrder,
    byte_order: ByteOrder,
) -> Option<f64> {
    let n = usize::from(data_type.words());
    let words = words.get(..n)?;
    let w = canonical(words, word_order, byte_order);
    let u32_of = |w: [u16; 4]| (u32::from(w[0]) << 16) | u32::from(w[1]);
    Some(match data_type {
        DataType::Bool => f64::from(u8::from(w[0] != 0)),
        DataType::U16 => f64::from(w[0]),
        DataType::I16 => f64::from(w[0] as i16),
        DataType::U32 => f64::from(u32_of(w)),
        DataType::I32 => f64::from(u32_of(w) as i32),
        DataType::F32 => f64::from(f32::from_bits(u32_of(w))),
        DataType::F64 => {
            let bits = w.iter().fold(0u64, |acc, &x| (acc << 16) | u64::from(x));
            f64::from_bits(bits)
        }
    })
}

/// The words that carry `value` as `data_type`, in the device's order. Integers are rounded;
/// `None` for a value the type cannot hold (out of range, or not finite).
pub fn encode_value(
    value: f64,
    data_type: DataType,
    word_order: WordOrder,
    byte_order: ByteOrder,
) -> Option<Vec<u16>> {
    if !value.is_finite() {
        return None;
    }
    let r = value.round();
    let in_range = |lo: f64, hi: f64| (lo..=hi).contains(&r);
    let canonical: Vec<u16> = match data_type {
        DataType::Bool => vec![u16::from(value != 0.0)],
        DataType::U16 if in_range(0.0, f64::from(u16::MAX)) => vec![r as u16],
        DataType::I16 if in_range(f64::from(i16::MIN), f64::from(i16::MAX)) => {
            vec![r as i16 as u16]
        }
        DataType::U32 if in_range(0.0, f64::from(u32::MAX)) => split32(r as u32),
        DataType::I32 if in_range(f64::from(i32::MIN), f64::from(i32::MAX)) => {
            split32(r as i32 as u32)
        }
        DataType::F32 => {
            let x = value as f32;
            if !x.is_finite() {
                return None;
            }
            split32(x.to_bits())
        }
        DataType::F64 => {
            let b = value.to_bits();
            vec![
                (b >> 48) as u16,
                (b >> 32) as u16,
                (b >> 16) as u16,
                b as u16,
            ]
        }
        _ => return None,
    };
    // Reordering is its own inverse: the same permutation and swaps map canonical to device order.
    let ordered = self::canonical(&canonical, word_order, byte_order);
    Some(ordered[..canonical.len()].to_vec())
}

fn split32(x: u32) -> Vec<u16> {
    vec![(x >> 16) as u16, x as u16]
}

/// Engineering value = value × scale + offset.
pub fn engineering(register: &RegisterConfig, value: f64) -> f64 {
    value * register.scale + register.offset
}

/// How a polled channel's value travels in a `SampleBlock` (whose samples are integers):
/// `engineering = raw × scale + offset`, announced as the channel's scale and offset in the birth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawEncoding {
    pub scale: f64,
    pub offset: f64,
}

/// The encoding of `register`'s channel: integer types travel exactly as their register value
/// with the configured scale and offset; floats as multiples of their `resolution`.
pub fn raw_encoding(register: &RegisterConfig) -> RawEncoding {
    match (register.data_type().is_float(), register.resolution) {
        (true, Some(q)) => RawEncoding {
            scale: q,
            offset: 0.0,
        },
        _ => RawEncoding {
            scale: register.scale,
            offset: register.offset,
        },
    }
}

/// The raw sample that stands for "no value" in a `SampleBlock` (rig.proto, `ChannelSamples`).
pub use dtop_proto::RAW_NO_VALUE;

/// The integer a `SampleBlock` carries for `value` (the register's value, before scale and
/// offset); `None` when it does not fit an `i32` (or is not finite). [`RAW_NO_VALUE`] is out of
/// range too: it means "missing".
pub fn to_raw(register: &RegisterConfig, value: f64) -> Option<i32> {
    let raw = if register.data_type().is_float() {
        let q = raw_encoding(register).scale;
        (engineering(register, value) / q).round()
    } else {
        value
    };
    (raw.is_finite() && (f64::from(RAW_NO_VALUE + 1)..=f64::from(i32::MAX)).contains(&raw))
        .then_some(raw as i32)
}

/// The engineering values a polled channel can carry, `(lowest, highest)`, when its register
/// type can hold values beyond them (a u32, or a float at its resolution); `None` when every
/// value of the type fits.
pub fn carried_range(register: &RegisterConfig) -> Option<(f64, f64)> {
    let enc = raw_encoding(register);
    let ends = |lo: f64, hi: f64| {
        let (a, b) = (lo * enc.scale + enc.offset, hi * enc.scale + enc.offset);
        (a.min(b), a.max(b))
    };
    let (lo, hi) = (f64::from(RAW_NO_VALUE + 1), f64::from(i32::MAX));
    match register.data_type() {
        DataType::Bool | DataType::U16 | DataType::I16 => None,
        // i32::MIN itself is the "no value" marker: one value of 2³², not worth a warning.
        DataType::I32 => None,
        DataType::U32 | DataType::F32 | DataType::F64 => Some(ends(lo, hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDERS: [(WordOrder, ByteOrder, [u16; 2]); 4] = [
        // ABCD: high word first, high byte first.
        (WordOrder::Big, ByteOrder::Big, [0x4049, 0x0FDB]),
        // CDAB: low word first.
        (WordOrder::Little, ByteOrder::Big, [0x0FDB, 0x4049]),
        // BADC: bytes swapped in each word.
        (WordOrder::Big, ByteOrder::Little, [0x4940, 0xDB0F]),
        // DCBA: fully little-endian.
        (WordOrder::Little, ByteOrder::Little, [0xDB0F, 0x4940]),
    ];

    #[test]
    fn decodes_pi_as_f32_in_every_word_and_byte_order() {
        // 0x40490FDB is the f32 nearest π: 3.14159274...
        for (wo, bo, words) in ORDERS {
            let x = decode_value(&words, DataType::F32, wo, bo).unwrap_or(f64::NAN);
            assert_eq!(x, f64::from(std::f32::consts::PI), "{wo:?} {bo:?}");
            assert_eq!(format!("{x:.5}"), "3.14159");
            assert_eq!(
                encode_value(x, DataType::F32, wo, bo),
                Some(words.to_vec()),
                "{wo:?} {bo:?}"
            );
        }
    }

    #[test]
    fn decodes_f64_and_32_bit_integers_in_every_order() {
        // π as f64 is 0x400921FB54442D18.
        let abcd = [0x4009, 0x21FB, 0x5444, 0x2D18];
        let cdab = [0x2D18, 0x5444, 0x21FB, 0x4009];
        let badc = [0x0940, 0xFB21, 0x4454, 0x182D];
        let dcba = [0x182D, 0x4454, 0xFB21, 0x0940];
        for (words, wo, bo) in [
            (abcd, WordOrder::Big, ByteOrder::Big),
            (cdab, WordOrder::Little, ByteOrder::Big),
            (badc, WordOrder::Big, ByteOrder::Little),
            (dcba, WordOrder::Little, ByteOrder::Little),
        ] {
            assert_eq!(
                decode_value(&words, DataType::F64, wo, bo),
                Some(std::f64::consts::PI)
            );
            assert_eq!(
                encode_value(std::f64::consts::PI, DataType::F64, wo, bo),
                Some(words.to_vec())
            );
        }
        // -2 as i32 is 0xFFFFFFFE; 0x12345678 as u32 read low word first.
        let big = (WordOrder::Big, ByteOrder::Big);
        assert_eq!(
            decode_value(&[0xFFFF, 0xFFFE], DataType::I32, big.0, big.1),
            Some(-2.0)
        );
        assert_eq!(
            decode_value(
                &[0x5678, 0x1234],
                DataType::U32,
                WordOrder::Little,
                ByteOrder::Big
            ),
            Some(f64::from(0x1234_5678u32))
        );
        assert_eq!(
            decode_value(&[0xFFFF, 0xFFFE], DataType::U32, big.0, big.1),
            Some(4_294_967_294.0)
        );
    }

    #[test]
    fn decodes_16_bit_values_and_swapped_bytes() {
        let (b, l) = (ByteOrder::Big, ByteOrder::Little);
        assert_eq!(
            decode_value(&[0xFF38], DataType::I16, WordOrder::Big, b),
            Some(-200.0)
        );
        assert_eq!(
            decode_value(&[0xFF38], DataType::U16, WordOrder::Big, b),
            Some(65_336.0)
        );
        assert_eq!(
            decode_value(&[0x38FF], DataType::I16, WordOrder::Big, l),
            Some(-200.0)
        );
        assert_eq!(
            decode_value(&[7], DataType::Bool, WordOrder::Big, b),
            Some(1.0)
        );
        assert_eq!(decode_value(&[1], DataType::F32, WordOrder::Big, b), None);
    }

    #[test]
    fn encoding_refuses_what_the_type_cannot_hold() {
        let (w, b) = (WordOrder::Big, ByteOrder::Big);
        assert_eq!(encode_value(-1.0, DataType::U16, w, b), None);
        assert_eq!(encode_value(70_000.0, DataType::I16, w, b), None);
        assert_eq!(encode_value(f64::NAN, DataType::F32, w, b), None);
        assert_eq!(encode_value(1e300, DataType::F32, w, b), None);
        assert_eq!(
            encode_value(-200.4, DataType::I16, w, b),
            Some(vec![0xFF38])
        );
        assert_eq!(
            encode_value(10.0, DataType::F32, w, b),
            Some(vec![0x4120, 0])
        );
    }

    fn register(
        data_type: DataType,
        scale: f64,
        offset: f64,
        resolution: Option<f64>,
    ) -> RegisterConfig {
        RegisterConfig {
            channel: "c".into(),
            table: crate::modbus::config::Table::Input,
            address: 0,
            data_type: Some(data_type),
            word_order: WordOrder::Big,
            byte_order: ByteOrder::Big,
            scale,
            offset,
            unit: String::new(),
            kind: Default::default(),
            floor: 0,
            resolution,
        }
    }

    #[test]
    fn integers_travel_exactly_and_floats_as_multiples_of_their_resolution() {
        // An i16 temperature in tenths of a degree with a -40 °C offset.
        let t = register(DataType::I16, 0.1, -40.0, None);
        assert_eq!(to_raw(&t, -200.0), Some(-200));
        let enc = raw_encoding(&t);
        assert!((f64::from(-200) * enc.scale + enc.offset - engineering(&t, -200.0)).abs() < 1e-12);
        // An f32 acceleration, scaled by 2 and published in µm/s² steps.
        let a = register(DataType::F32, 2.0, 0.0, Some(1e-6));
        assert_eq!(to_raw(&a, 0.125), Some(250_000));
        assert_eq!(
            raw_encoding(&a),
            RawEncoding {
                scale: 1e-6,
                offset: 0.0
            }
        );
        // Beyond what an i32 holds: refused, not wrapped.
        assert_eq!(to_raw(&a, 1e4), None);
        let u = register(DataType::U32, 1.0, 0.0, None);
        assert_eq!(to_raw(&u, 4_294_967_294.0), None);
        assert_eq!(to_raw(&u, 2_147_483_648.0), None, "0x80000000");
        assert_eq!(to_raw(&u, 2_147_483_647.0), Some(i32::MAX));
        assert_eq!(to_raw(&a, f64::NAN), None);
        // The "no value" marker is never a value.
        let i = register(DataType::I32, 1.0, 0.0, None);
        assert_eq!(to_raw(&i, f64::from(i32::MIN)), None);
        assert_eq!(to_raw(&i, f64::from(i32::MIN + 1)), Some(i32::MIN + 1));
    }

    #[test]
    fn says_which_channels_can_leave_the_i32_range_and_what_they_carry() {
        assert_eq!(
            carried_range(&register(DataType::U16, 0.1, -40.0, None)),
            None
        );
        assert_eq!(
            carried_range(&register(DataType::I32, 1.0, 0.0, None)),
            None
        );
        assert_eq!(
            carried_range(&register(DataType::U32, 1.0, 0.0, None)),
            Some((-2_147_483_647.0, 2_147_483_647.0))
        );
        // An f32 in mN steps carries about ±2.1 MN.
        let (lo, hi) = carried_range(&register(DataType::F32, 1.0, 0.0, Some(0.001)))
            .unwrap_or_else(|| panic!("an f32 can overflow"));
        assert!((hi - 2_147_483.647).abs() < 1e-6 && lo == -hi, "{lo} {hi}");
    }
}
