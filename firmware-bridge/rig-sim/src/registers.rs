//! Owns the Modbus register map (MODBUS.md): address ranges, word encodings, and the checks
//! that turn a bad request into a Modbus exception. Pure: no sockets, no actuator state.

use tokio_modbus::ExceptionCode;

/// Holding register: actuator enable, 0 or 1 (MODBUS.md).
pub const HOLDING_ENABLE: u16 = 0;
/// Holding registers 1–2: drive force, f32, N, high word first (MODBUS.md).
pub const HOLDING_FORCE: u16 = 1;
/// Holding registers 3–6: the sample the drive was computed from, u64, high word first;
/// all ones = none (MODBUS.md). Only the latency probe reads it.
pub const HOLDING_ORIGIN: u16 = 3;
/// Holding register 7: the shaker's waveform, 0 off, 1 noise, 2 sine, 3 chirp (MODBUS.md).
pub const HOLDING_SHAKER: u16 = 7;
/// Holding registers 8–9, 10–11, 12–13: shaker amplitude (N, RMS for noise), frequency (Hz;
/// noise low corner, chirp start) and end frequency (Hz; noise high corner, chirp end), f32.
pub const HOLDING_SHAKER_AMPLITUDE: u16 = 8;
/// Number of holding registers.
pub const HOLDING_COUNT: usize = 14;
/// Shaker waveform codes.
pub const SHAKER_OFF: u16 = 0;
pub const SHAKER_NOISE: u16 = 1;
pub const SHAKER_SINE: u16 = 2;
pub const SHAKER_CHIRP: u16 = 3;

/// Input registers 0–5: floor 1..3 acceleration, f32, m/s², two words each.
pub const INPUT_FLOOR_ACCEL: u16 = 0;
/// Input registers 6–7: channel 3 (force gauge, N; base accelerometer in ground mode).
pub const INPUT_FORCE: u16 = 6;
/// Input registers 8–11: samples taken so far (= next sample index), u64, high word first.
pub const INPUT_SAMPLE_INDEX: u16 = 8;
/// Number of input registers.
pub const INPUT_COUNT: usize = 12;

/// Most registers one read may return (Modbus application protocol v1.1b3 §6.3, §6.4).
pub const MAX_READ_QUANTITY: u16 = 125;
/// Most registers one write may carry (§6.12).
pub const MAX_WRITE_QUANTITY: u16 = 123;

/// A register request, stripped of the Modbus framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterRequest {
    /// Read `quantity` input registers from `address`.
    ReadInput { address: u16, quantity: u16 },
    /// Read `quantity` holding registers from `address`.
    ReadHolding { address: u16, quantity: u16 },
    /// Write `words` to consecutive holding registers from `address`. `single` tells
    /// function 0x06 (echoes the value) from 0x10 (echoes the count).
    WriteHolding {
        address: u16,
        words: Vec<u16>,
        single: bool,
    },
}

/// The successful reply to a `RegisterRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterReply {
    /// Input registers read.
    InputWords(Vec<u16>),
    /// Holding registers read.
    HoldingWords(Vec<u16>),
    /// Echo of a single write: address and value.
    WroteSingle { address: u16, value: u16 },
    /// Echo of a multiple write: address and count.
    WroteMultiple { address: u16, quantity: u16 },
}

/// f32 as two words, high word first ("big-endian word order").
pub fn f32_to_words(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits >> 16) as u16, bits as u16]
}

/// Inverse of `f32_to_words`.
pub fn words_to_f32(words: [u16; 2]) -> f32 {
    f32::from_bits((u32::from(words[0]) << 16) | u32::from(words[1]))
}

/// u64 as four words, most significant first.
pub fn u64_to_words(value: u64) -> [u16; 4] {
    [
        (value >> 48) as u16,
        (value >> 32) as u16,
        (value >> 16) as u16,
        value as u16,
    ]
}

/// Inverse of `u64_to_words`.
pub fn words_to_u64(words: [u16; 4]) -> u64 {
    words.iter().fold(0, |acc, w| (acc << 16) | u64::from(*w))
}

/// The input register bank for the latest sample.
pub fn input_bank(value_si: &[f64; 4], samples_taken: u64) -> [u16; INPUT_COUNT] {
    let mut bank = [0u16; INPUT_COUNT];
    for (c, value) in value_si.iter().enumerate() {
        // Narrowing to f32 is the register format; the ADC resolution is far coarser.
        let words = f32_to_words(*value as f32);
        bank[2 * c] = words[0];
        bank[2 * c + 1] = words[1];
    }
    let index_at = usize::from(INPUT_SAMPLE_INDEX);
    bank[index_at..index_at + 4].copy_from_slice(&u64_to_words(samples_taken));
    bank
}

/// `bank[address .. address + quantity]`, or the exception a Modbus device answers with.
pub fn read_range(bank: &[u16], address: u16, quantity: u16) -> Result<Vec<u16>, ExceptionCode> {
    if quantity == 0 || quantity > MAX_READ_QUANTITY {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(address);
    let end = start + usize::from(quantity);
    bank.get(start..end)
        .map(<[u16]>::to_vec)
        .ok_or(ExceptionCode::IllegalDataAddress)
}

/// Applies `words` at `address` to a copy of the holding bank and checks the result: the
/// address range first (IllegalDataAddress), then the values (IllegalDataValue). Returns the
/// new bank; the caller commits it only on success, so a refused write changes nothing.
pub fn write_range(
    bank: &[u16; HOLDING_COUNT],
    address: u16,
    words: &[u16],
) -> Result<[u16; HOLDING_COUNT], ExceptionCode> {
    if words.is_empty() || words.len() > usize::from(MAX_WRITE_QUANTITY) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = usize::from(address);
    let end = start + words.len();
    if end > HOLDING_COUNT {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    let mut next = *bank;
    next[start..end].copy_from_slice(words);
    if next[usize::from(HOLDING_ENABLE)] > 1 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let force = words_to_f32(holding_force_words(&next));
    if !force.is_finite() {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let (waveform, values) = shaker(&next);
    if waveform > SHAKER_CHIRP || values.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(ExceptionCode::IllegalDataValue);
    }
    Ok(next)
}

/// Whether a write of `len` words at `address` touches the shaker's waveform register, which
/// is what makes the shaker take its new settings.
pub fn writes_shaker(address: u16, len: usize) -> bool {
    (usize::from(address)..usize::from(address) + len).contains(&usize::from(HOLDING_SHAKER))
}

/// The shaker block of a holding bank: the waveform code and [amplitude, frequency, end
/// frequency].
pub fn shaker(bank: &[u16; HOLDING_COUNT]) -> (u16, [f32; 3]) {
    let at = usize::from(HOLDING_SHAKER_AMPLITUDE);
    let f = |i: usize| words_to_f32([bank[at + 2 * i], bank[at + 2 * i + 1]]);
    (bank[usize::from(HOLDING_SHAKER)], [f(0), f(1), f(2)])
}

/// The origin sample index of a holding bank (`u64::MAX` = none).
pub fn holding_origin(bank: &[u16; HOLDING_COUNT]) -> u64 {
    let at = usize::from(HOLDING_ORIGIN);
    words_to_u64([bank[at], bank[at + 1], bank[at + 2], bank[at + 3]])
}

/// The two force words of a holding bank.
pub fn holding_force_words(bank: &[u16; HOLDING_COUNT]) -> [u16; 2] {
    let at = usize::from(HOLDING_FORCE);
    [bank[at], bank[at + 1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_use_high_word_first() {
        // 1.0f32 = 0x3F80_0000.
        assert_eq!(f32_to_words(1.0), [0x3F80, 0x0000]);
        assert_eq!(words_to_f32([0xC120, 0x0000]), -10.0);
        for v in [0.0f32, -2.5, 1e-7, 123_456.78] {
            assert_eq!(words_to_f32(f32_to_words(v)), v);
        }
    }

    #[test]
    fn sample_index_uses_most_significant_word_first() {
        assert_eq!(u64_to_words(0x0001_0002_0003_0004), [1, 2, 3, 4]);
        assert_eq!(words_to_u64(u64_to_words(u64::MAX - 5)), u64::MAX - 5);
    }

    #[test]
    fn input_bank_lays_out_values_then_the_index() {
        let bank = input_bank(&[1.0, -10.0, 0.0, 2.5], 70_000);
        assert_eq!(bank[0..2], [0x3F80, 0]);
        assert_eq!(bank[2..4], [0xC120, 0]);
        assert_eq!(words_to_f32([bank[6], bank[7]]), 2.5);
        assert_eq!(bank[8..12], [0, 0, 1, 4_464]); // 70 000 = 1·65 536 + 4 464
    }

    #[test]
    fn refuses_reads_past_the_end_with_illegal_data_address() {
        let bank = [0u16; INPUT_COUNT];
        assert_eq!(read_range(&bank, 0, 12).map(|v| v.len()), Ok(12));
        assert_eq!(read_range(&bank, 11, 1).map(|v| v.len()), Ok(1));
        assert_eq!(
            read_range(&bank, 11, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_range(&bank, 100, 1),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_range(&bank, u16::MAX, 125),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_range(&bank, 0, 0),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn refuses_bad_writes_without_changing_anything() {
        let bank = [0; HOLDING_COUNT];
        assert_eq!(
            write_range(&bank, 14, &[1]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            write_range(&bank, 13, &[1, 2]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            write_range(&bank, 7, &[4]),
            Err(ExceptionCode::IllegalDataValue),
            "waveform code"
        );
        let negative = f32_to_words(-1.0);
        assert_eq!(
            write_range(&bank, 8, &negative),
            Err(ExceptionCode::IllegalDataValue),
            "negative amplitude"
        );
        assert_eq!(
            write_range(&bank, 0, &[2]),
            Err(ExceptionCode::IllegalDataValue)
        );
        let nan = f32_to_words(f32::NAN);
        assert_eq!(
            write_range(&bank, 1, &nan),
            Err(ExceptionCode::IllegalDataValue)
        );
        let ok = write_range(&bank, 0, &[1, 0x4120, 0, 0, 0, 0, 42]).unwrap();
        assert_eq!(ok[..7], [1, 0x4120, 0, 0, 0, 0, 42]);
        assert_eq!(words_to_f32(holding_force_words(&ok)), 10.0);
        assert_eq!(holding_origin(&ok), 42);
    }
}
