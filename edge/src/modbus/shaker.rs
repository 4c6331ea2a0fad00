//! Owns the shaker amplifier behind Modbus: turning an operator's `Excitation` into the one
//! holding-register write the amplifier takes (pure, tested) and sending it over its own short
//! TCP connection with a timeout (commands are rare; the device's polling connection is the
//! bus task's and is left alone).

use std::time::Duration;

use dtop_proto::v1::excitation::Waveform;
use tokio_modbus::client::Writer;

use crate::modbus::config::{DataType, DeviceConfig, ModbusShakerConfig};
use crate::modbus::decode::encode_value;

/// What the operator asked the shaker for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShakerSetting {
    pub waveform: Waveform,
    pub amplitude_n: f64,
    pub frequency_hz: f64,
    pub frequency_end_hz: f64,
}

/// Why a setting was not applied, in words for the operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShakerError {
    #[error("{0}")]
    Refused(String),
    #[error("the shaker amplifier {device} did not take the setting: {why}")]
    Device { device: String, why: String },
}

/// The words to write at `cfg.waveform_address`: the waveform code, then amplitude, frequency
/// and end frequency as f32 in the configured order.
///
/// # Errors
/// [`ShakerError::Refused`] for an amplitude above the limit or a negative or non-finite value.
pub fn shaker_words(cfg: &ModbusShakerConfig, s: ShakerSetting) -> Result<Vec<u16>, ShakerError> {
    let values = [s.amplitude_n, s.frequency_hz, s.frequency_end_hz];
    if values.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
        return Err(ShakerError::Refused(format!(
            "amplitude and frequencies must be finite and >= 0, got {values:?}"
        )));
    }
    if s.amplitude_n > cfg.max_amplitude_n {
        return Err(ShakerError::Refused(format!(
            "amplitude {} N exceeds modbus.shaker.max_amplitude_n = {} N",
            s.amplitude_n, cfg.max_amplitude_n
        )));
    }
    let code = match s.waveform {
        Waveform::Off => cfg.waveform_codes[0],
        Waveform::Noise => cfg.waveform_codes[1],
        Waveform::Sine => cfg.waveform_codes[2],
        Waveform::Chirp => cfg.waveform_codes[3],
    };
    let mut words = vec![code];
    for v in values {
        let encoded = encode_value(v, DataType::F32, cfg.word_order, cfg.byte_order)
            .ok_or_else(|| ShakerError::Refused(format!("{v} does not fit an f32")))?;
        words.extend(encoded);
    }
    Ok(words)
}

/// Writes `setting` to the shaker on `device` (a TCP device), within the device's request
/// timeout (plus its connect timeout).
///
/// # Errors
/// A refused setting, or the device's failure, timeout or Modbus exception.
pub async fn apply(
    cfg: &ModbusShakerConfig,
    device: &DeviceConfig,
    setting: ShakerSetting,
) -> Result<(), ShakerError> {
    let words = shaker_words(cfg, setting)?;
    let failed = |why: String| ShakerError::Device {
        device: device.name.clone(),
        why,
    };
    let Some(tcp) = &device.tcp else {
        return Err(failed("not a Modbus TCP device".into()));
    };
    let budget = Duration::from_millis(tcp.connect_timeout_ms) + device.request_timeout();
    let work = async {
        let mut ctx =
            tokio_modbus::client::tcp::connect_slave(tcp.addr, tokio_modbus::Slave(device.unit_id))
                .await
                .map_err(|e| failed(format!("connect: {e}")))?;
        match ctx
            .write_multiple_registers(cfg.waveform_address, &words)
            .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(exception)) => Err(failed(format!("exception {exception:?}"))),
            Err(e) => Err(failed(e.to_string())),
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .map_err(|_| failed(format!("no answer within {budget:?}")))?
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg() -> ModbusShakerConfig {
        ModbusShakerConfig {
            device: "sim".into(),
            waveform_address: 7,
            waveform_codes: [0, 1, 2, 3],
            word_order: Default::default(),
            byte_order: Default::default(),
            max_amplitude_n: 10.0,
        }
    }

    #[test]
    fn a_sine_is_its_code_then_three_big_endian_floats() {
        let words = shaker_words(
            &cfg(),
            ShakerSetting {
                waveform: Waveform::Sine,
                amplitude_n: 5.0,
                frequency_hz: 7.0,
                frequency_end_hz: 0.0,
            },
        )
        .unwrap();
        // 5.0 = 0x40A0_0000, 7.0 = 0x40E0_0000 (IEEE 754 binary32, high word first).
        assert_eq!(words, [2, 0x40A0, 0, 0x40E0, 0, 0, 0]);
    }

    #[test]
    fn refuses_an_amplitude_above_the_limit() {
        let err = shaker_words(
            &cfg(),
            ShakerSetting {
                waveform: Waveform::Noise,
                amplitude_n: 11.0,
                frequency_hz: 0.0,
                frequency_end_hz: 50.0,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_amplitude_n"), "{err}");
    }
}
