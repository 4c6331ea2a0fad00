//! The `[modbus]` section of the edge config: devices, their transports and register maps, and the
//! optional Modbus actuator; defaults and whole-section validation. Opens nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

/// Largest register count one read (0x03, 0x04) may ask for (Modbus Application Protocol
/// v1.1b3 §6.3, §6.4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Largest bit count one read (0x01, 0x02) may ask for (ibid. §6.1, §6.2).
pub const MAX_READ_BITS: u16 = 2000;
/// Largest slave id a serial line addresses (Modbus over Serial Line v1.02 §2.2); 0 is the
/// broadcast address, which never answers, so it cannot be polled.
pub const MAX_RTU_UNIT_ID: u8 = 247;
/// Polled channels get stream ids from here up, one stream per device (stream 0 is the
/// firmware's).
pub const FIRST_POLLED_STREAM_ID: u32 = 1;
/// Polled channels get channel ids from here up, clear of the firmware's `u8` ids.
pub const FIRST_POLLED_CHANNEL_ID: u32 = 256;

/// Modbus devices the edge polls, and optionally drives.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// Polled devices; each becomes one stream of `SampleBlock`s.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// A Modbus actuator (drive and enable holding registers) on one of `devices`.
    #[serde(default)]
    pub actuator: Option<ModbusActuatorConfig>,
    /// A shaker amplifier (waveform and f32 settings in holding registers) on one of the TCP
    /// `devices`, started and stopped by operators' `Excitation` commands.
    #[serde(default)]
    pub shaker: Option<ModbusShakerConfig>,
}

/// A shaker amplifier behind holding registers, as the rig simulator's (MODBUS.md): a waveform
/// word (codes below) and three f32 values, written in one request each time an `Excitation`
/// command arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusShakerConfig {
    /// `name` of a TCP device in `modbus.devices`.
    pub device: String,
    /// Holding register of the waveform word; the amplitude, frequency and end frequency
    /// follow as f32 at +1, +3 and +5.
    pub waveform_address: u16,
    /// Words written for off, noise, sine and chirp, in that order.
    #[serde(default = "default_waveform_codes")]
    pub waveform_codes: [u16; 4],
    /// Word order of the f32 values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Byte order of the f32 values.
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Largest amplitude an operator may ask for, N.
    pub max_amplitude_n: f64,
}

const fn default_waveform_codes() -> [u16; 4] {
    [0, 1, 2, 3]
}

/// One Modbus device (a unit id behind a TCP address, or a slave on an RTU line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Name in logs and statistics, unique among devices.
    pub name: String,
    /// Modbus TCP transport; give exactly one of `tcp` and `rtu`.
    #[serde(default)]
    pub tcp: Option<TcpConfig>,
    /// Modbus RTU transport; devices naming the same `path` share one bus owner.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Unit (slave) id: 1..=247 on RTU; any value on TCP (255 = "the TCP device itself").
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// How long one request may take until its response is complete, ms.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Poll period, ms: one sample of every register per period (the stream's sample period).
    /// Zero polls nothing (a device that only hosts the actuator).
    #[serde(default = "default_poll_period_ms")]
    pub poll_period_ms: u64,
    /// Registers per read request, at most 125 (bits: at most 2000 are always allowed).
    #[serde(default = "default_max_registers_per_read")]
    pub max_registers_per_read: u16,
    /// Unused registers a read may span to join two neighbours into one request. 0 only joins
    /// adjacent registers, safe for devices that refuse reads of unmapped addresses.
    #[serde(default)]
    pub max_gap_registers: u16,
    /// The registers to poll, one channel each.
    #[serde(default)]
    pub registers: Vec<RegisterConfig>,
}

/// Modbus TCP (MBAP) transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// Server address, e.g. `192.168.1.20:502`.
    pub addr: SocketAddr,
    /// How long a TCP connect may take, ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// First reconnect delay, ms; doubles (with jitter) per failed attempt up to the maximum.
    #[serde(default = "default_reconnect_backoff_min_ms")]
    pub reconnect_backoff_min_ms: u64,
    /// Largest reconnect delay, ms.
    #[serde(default = "default_reconnect_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
}

/// Modbus RTU transport: a serial line, shared by every device that names its `path`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Line rate, bit/s.
    #[serde(default = "default_rtu_baud")]
    pub baud: u32,
    /// Parity bit. The Modbus serial default is even.
    #[serde(default)]
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Data bits; RTU needs 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Silence after a broadcast before the next request, ms, so slaves can act on it
    /// (Modbus over Serial Line §2.4.1 "turnaround delay").
    #[serde(default = "default_turnaround_delay_ms")]
    pub turnaround_delay_ms: u64,
    /// How long the bus waits before reopening the port after it failed, ms.
    #[serde(default = "default_reopen_delay_ms")]
    pub reopen_delay_ms: u64,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    #[default]
    Even,
    Odd,
}

/// One polled register (or coil), published as one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Channel name in the birth manifest and the database, unique within the rig.
    pub channel: String,
    /// Which table the value lives in.
    pub table: Table,
    /// 0-based PDU address of the first word (or bit), not "40001" numbering.
    pub address: u16,
    /// Value type; `u16` for register tables and `bool` for bit tables when omitted.
    #[serde(default)]
    pub data_type: Option<DataType>,
    /// Order of the words of a multi-word value.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Order of the two bytes in each word.
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Engineering value = register value × scale + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// See `scale`.
    #[serde(default)]
    pub offset: f64,
    /// Unit of the engineering value, e.g. `m/s^2`.
    #[serde(default)]
    pub unit: String,
    /// What the channel measures: acceleration, force, displacement, velocity, current, other.
    #[serde(default)]
    pub kind: ChannelKindConfig,
    /// Floor the sensor sits on (0 = base or not floor-bound).
    #[serde(default)]
    pub floor: u32,
    /// Quantum of the published value for `f32`/`f64` registers, in the engineering unit:
    /// blocks carry integers, so a float is sent as round(value / resolution). Required for
    /// float types, refused for integer ones (those travel exactly).
    #[serde(default)]
    pub resolution: Option<f64>,
}

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write words (0x03).
    Holding,
    /// Read-only words (0x04).
    Input,
    /// Read/write bits (0x01).
    Coil,
    /// Read-only bits (0x02).
    Discrete,
}

impl Table {
    /// True for the bit tables.
    pub const fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }
}

/// How the words of a register are read as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
}

impl DataType {
    /// Words the value occupies (a bit for `Bool`).
    pub const fn words(self) -> u16 {
        match self {
            Self::Bool | Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
            Self::F64 => 4,
        }
    }

    pub const fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F64)
    }
}

/// Word order of multi-word values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WordOrder {
    /// Most significant word first ("ABCD"), the usual Modbus convention.
    #[default]
    Big,
    /// Least significant word first ("CDAB").
    Little,
}

/// Byte order inside each word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ByteOrder {
    /// High byte first, as the Modbus spec sends words.
    #[default]
    Big,
    /// Bytes swapped within each word ("BADC" with big word order).
    Little,
}

/// `ChannelKind` of a polled channel, in config spelling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKindConfig {
    Acceleration,
    Force,
    Displacement,
    Velocity,
    Current,
    #[default]
    Other,
}

/// An actuator driven through holding registers: an enable word and a drive-force value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusActuatorConfig {
    /// `name` of the device in `modbus.devices` that hosts the registers.
    pub device: String,
    /// Holding register of the enable word.
    pub enable_address: u16,
    /// Word written to enable the actuator.
    #[serde(default = "default_enable_on")]
    pub enable_on_value: u16,
    /// Word written to disable it.
    #[serde(default)]
    pub enable_off_value: u16,
    /// First holding register of the drive value.
    pub force_address: u16,
    /// Type of the drive value (not `bool`).
    #[serde(default = "default_force_data_type")]
    pub force_data_type: DataType,
    /// Word order of the drive value.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Byte order of the drive value.
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Register value per newton: register = force_n × force_scale + force_offset (rounded for
    /// integer types).
    #[serde(default = "default_scale")]
    pub force_scale: f64,
    /// See `force_scale`.
    #[serde(default)]
    pub force_offset: f64,
    /// While enabled, the setpoint is re-written at least this often, ms, so the device's own
    /// watchdog (the rig simulator's trips at 500 ms) stays fed.
    #[serde(default = "default_refresh_period_ms")]
    pub refresh_period_ms: u64,
    /// First of four holding registers that receive the sample index the force was computed
    /// from (u64, most significant word first), e.g. 3 on the rig simulator, which measures
    /// the control loop's latency from it. Off when absent.
    #[serde(default)]
    pub origin_address: Option<u16>,
}

const fn default_unit_id() -> u8 {
    1
}
const fn default_request_timeout_ms() -> u64 {
    200
}
const fn default_poll_period_ms() -> u64 {
    100
}
const fn default_max_registers_per_read() -> u16 {
    MAX_READ_REGISTERS
}
const fn default_connect_timeout_ms() -> u64 {
    2_000
}
const fn default_reconnect_backoff_min_ms() -> u64 {
    100
}
const fn default_reconnect_backoff_max_ms() -> u64 {
    10_000
}
/// Modbus over Serial Line §2.5.1: 19200 is the default every device must support.
const fn default_rtu_baud() -> u32 {
    19_200
}
const fn default_stop_bits() -> u8 {
    1
}
const fn default_data_bits() -> u8 {
    8
}
/// Modbus over Serial Line §2.4.1 names 100 to 200 ms as typical.
const fn default_turnaround_delay_ms() -> u64 {
    100
}
const fn default_reopen_delay_ms() -> u64 {
    1_000
}
const fn default_scale() -> f64 {
    1.0
}
const fn default_enable_on() -> u16 {
    1
}
const fn default_force_data_type() -> DataType {
    DataType::F32
}
/// Under half the rig simulator's 500 ms watchdog (MODBUS.md "Watchdog").
const fn default_refresh_period_ms() -> u64 {
    200
}

impl DeviceConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn poll_period(&self) -> Duration {
        Duration::from_millis(self.poll_period_ms)
    }
}

impl RegisterConfig {
    /// The data type, with the table's default filled in.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.table.is_bits() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }

    /// Words (or bits) the register spans.
    pub fn words(&self) -> u16 {
        self.data_type().words()
    }
}

impl RtuConfig {
    /// True when `other` describes the same line settings (everything but the path must agree
    /// for devices that share it).
    fn same_line(&self, other: &Self) -> bool {
        self.baud == other.baud
            && self.parity == other.parity
            && self.stop_bits == other.stop_bits
            && self.data_bits == other.data_bits
            && self.turnaround_delay_ms == other.turnaround_delay_ms
            && self.reopen_delay_ms == other.reopen_delay_ms
    }
}

impl ModbusConfig {
    /// Appends every problem of the section to `problems`.
    pub fn validate_into(&self, problems: &mut Vec<ConfigProblem>) {
        let mut bad =
            |field: &'static str, problem: String| problems.push(ConfigProblem { field, problem });
        let mut device_names = BTreeSet::new();
        let mut channel_names = BTreeSet::new();
        let mut lines: BTreeMap<&PathBuf, (&str, &RtuConfig)> = BTreeMap::new();
        let mut rtu_slaves: BTreeSet<(&PathBuf, u8)> = BTreeSet::new();

        for d in &self.devices {
            let name = d.name.as_str();
            if name.trim().is_empty() {
                bad("modbus.devices.name", "must not be empty".into());
            } else if !device_names.insert(name) {
                bad(
                    "modbus.devices.name",
                    format!("device {name:?} is named twice"),
                );
            }
            match (&d.tcp, &d.rtu) {
                (Some(_), Some(_)) | (None, None) => bad(
                    "modbus.devices",
                    format!("device {name:?} needs exactly one of [tcp] and [rtu]"),
                ),
                (Some(t), None) => {
                    if t.addr.port() == 0 {
                        bad(
                            "modbus.devices.tcp.addr",
                            format!("device {name:?}: port 0"),
                        );
                    }
                    if !(1..=60_000).contains(&t.connect_timeout_ms) {
                        bad(
                            "modbus.devices.tcp.connect_timeout_ms",
                            format!(
                                "device {name:?}: {} is outside 1..=60000",
                                t.connect_timeout_ms
                            ),
                        );
                    }
                    if t.reconnect_backoff_min_ms == 0
                        || t.reconnect_backoff_max_ms < t.reconnect_backoff_min_ms
                    {
                        bad(
                            "modbus.devices.tcp.reconnect_backoff_min_ms",
                            format!(
                                "device {name:?}: need 0 < min ({}) <= max ({})",
                                t.reconnect_backoff_min_ms, t.reconnect_backoff_max_ms
                            ),
                        );
                    }
                }
                (None, Some(r)) => {
                    if r.path.as_os_str().is_empty() {
                        bad("modbus.devices.rtu.path", format!("device {name:?}: empty"));
                    }
                    if !(300..=4_000_000).contains(&r.baud) {
                        bad(
                            "modbus.devices.rtu.baud",
                            format!("device {name:?}: {} is outside 300..=4000000", r.baud),
                        );
                    }
                    if !matches!(r.stop_bits, 1 | 2) {
                        bad(
                            "modbus.devices.rtu.stop_bits",
                            format!("device {name:?}: {} is not 1 or 2", r.stop_bits),
                        );
                    }
                    if r.data_bits != 8 {
                        bad(
                            "modbus.devices.rtu.data_bits",
                            format!(
                                "device {name:?}: {} (Modbus RTU needs 8 data bits)",
                                r.data_bits
                            ),
                        );
                    }
                    if r.turnaround_delay_ms > 10_000 {
                        bad(
                            "modbus.devices.rtu.turnaround_delay_ms",
                            format!("device {name:?}: {} is above 10000", r.turnaround_delay_ms),
                        );
                    }
                    if !(1..=600_000).contains(&r.reopen_delay_ms) {
                        bad(
                            "modbus.devices.rtu.reopen_delay_ms",
                            format!(
                                "device {name:?}: {} is outside 1..=600000",
                                r.reopen_delay_ms
                            ),
                        );
                    }
                    if !(1..=MAX_RTU_UNIT_ID).contains(&d.unit_id) {
                        bad(
                            "modbus.devices.unit_id",
                            format!(
                                "device {name:?}: {} is outside 1..={MAX_RTU_UNIT_ID} on RTU",
                                d.unit_id
                            ),
                        );
                    }
                    match lines.get(&r.path) {
                        Some((first, line)) if !line.same_line(r) => bad(
                            "modbus.devices.rtu",
                            format!(
                                "devices {first:?} and {name:?} share {} with different line settings",
                                r.path.display()
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            lines.insert(&r.path, (name, r));
                        }
                    }
                    if !rtu_slaves.insert((&r.path, d.unit_id)) {
                        bad(
                            "modbus.devices.unit_id",
                            format!(
                                "device {name:?}: unit id {} is used twice on {}",
                                d.unit_id,
                                r.path.display()
                            ),
                        );
                    }
                }
            }
            if !(1..=60_000).contains(&d.request_timeout_ms) {
                bad(
                    "modbus.devices.request_timeout_ms",
                    format!(
                        "device {name:?}: {} is outside 1..=60000",
                        d.request_timeout_ms
                    ),
                );
            }
            if d.poll_period_ms > 3_600_000 {
                bad(
                    "modbus.devices.poll_period_ms",
                    format!("device {name:?}: {} is above 3600000", d.poll_period_ms),
                );
            }
            if d.poll_period_ms == 0 && !d.registers.is_empty() {
                bad(
                    "modbus.devices.poll_period_ms",
                    format!("device {name:?}: 0 with registers to poll"),
                );
            }
            if !(1..=MAX_READ_REGISTERS).contains(&d.max_registers_per_read) {
                bad(
                    "modbus.devices.max_registers_per_read",
                    format!(
                        "device {name:?}: {} is outside 1..={MAX_READ_REGISTERS}",
                        d.max_registers_per_read
                    ),
                );
            }
            validate_registers(d, &mut channel_names, &mut bad);
        }

        if let Some(a) = &self.actuator {
            validate_actuator(a, &self.devices, &mut bad);
        }
        if let Some(sh) = &self.shaker {
            match self.devices.iter().find(|d| d.name == sh.device) {
                None => bad(
                    "modbus.shaker.device",
                    format!("{:?} is not a device in modbus.devices", sh.device),
                ),
                Some(d) if d.tcp.is_none() => bad(
                    "modbus.shaker.device",
                    format!("{:?} must be a Modbus TCP device", sh.device),
                ),
                Some(_) => {}
            }
            if !(sh.max_amplitude_n.is_finite() && sh.max_amplitude_n > 0.0) {
                bad(
                    "modbus.shaker.max_amplitude_n",
                    format!("{} must be positive", sh.max_amplitude_n),
                );
            }
            if usize::from(sh.waveform_address) + 7 > 65_536 {
                bad(
                    "modbus.shaker.waveform_address",
                    "the 7 registers must fit below 65536".into(),
                );
            }
        }
    }
}

fn validate_registers<'a>(
    d: &'a DeviceConfig,
    channel_names: &mut BTreeSet<&'a str>,
    bad: &mut impl FnMut(&'static str, String),
) {
    let name = d.name.as_str();
    // (table, first, last, channel) of every register, for the overlap check.
    let mut spans: Vec<(Table, u32, u32, &str)> = Vec::new();
    for r in &d.registers {
        let ch = r.channel.as_str();
        if ch.is_empty() || !ch.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            bad(
                "modbus.devices.registers.channel",
                format!("device {name:?}: {ch:?} is not [A-Za-z0-9_]+"),
            );
        } else if !channel_names.insert(ch) {
            bad(
                "modbus.devices.registers.channel",
                format!("device {name:?}: channel {ch:?} is named twice"),
            );
        }
        let dt = r.data_type();
        if r.table.is_bits() != (dt == DataType::Bool) {
            bad(
                "modbus.devices.registers.data_type",
                format!(
                    "channel {ch:?}: {dt:?} does not fit the {:?} table (bits are bool, words are not)",
                    r.table
                ),
            );
        }
        if r.table.is_bits() && (r.word_order != WordOrder::Big || r.byte_order != ByteOrder::Big) {
            bad(
                "modbus.devices.registers.word_order",
                format!("channel {ch:?}: bits have no word or byte order"),
            );
        }
        let last = u32::from(r.address) + u32::from(r.words()) - 1;
        if last > u32::from(u16::MAX) {
            bad(
                "modbus.devices.registers.address",
                format!(
                    "channel {ch:?}: {} words from {} run past 65535",
                    r.words(),
                    r.address
                ),
            );
        }
        if !(r.scale.is_finite() && r.scale != 0.0) {
            bad(
                "modbus.devices.registers.scale",
                format!("channel {ch:?}: {} is not a finite non-zero scale", r.scale),
            );
        }
        if !r.offset.is_finite() {
            bad(
                "modbus.devices.registers.offset",
                format!("channel {ch:?}: {} is not finite", r.offset),
            );
        }
        match (dt.is_float(), r.resolution) {
            (true, None) => bad(
                "modbus.devices.registers.resolution",
                format!("channel {ch:?}: {dt:?} needs a resolution (blocks carry integers)"),
            ),
            (true, Some(q)) if !(q.is_finite() && q > 0.0) => bad(
                "modbus.devices.registers.resolution",
                format!("channel {ch:?}: {q} is not a positive finite quantum"),
            ),
            (false, Some(_)) => bad(
                "modbus.devices.registers.resolution",
                format!("channel {ch:?}: only f32 and f64 registers take a resolution"),
            ),
            _ => {}
        }
        for (table, first, end, other) in &spans {
            if *table == r.table && u32::from(r.address) <= *end && *first <= last {
                bad(
                    "modbus.devices.registers.address",
                    format!(
                        "device {name:?}: channels {other:?} and {ch:?} overlap in the {table:?} table"
                    ),
                );
            }
        }
        spans.push((r.table, u32::from(r.address), last, ch));
    }
}

fn validate_actuator(
    a: &ModbusActuatorConfig,
    devices: &[DeviceConfig],
    bad: &mut impl FnMut(&'static str, String),
) {
    if !devices.iter().any(|d| d.name == a.device) {
        bad(
            "modbus.actuator.device",
            format!("{:?} is not a device in modbus.devices", a.device),
        );
    }
    if a.force_data_type == DataType::Bool {
        bad(
            "modbus.actuator.force_data_type",
            "a drive force cannot be a bool".into(),
        );
    }
    let force_last = u32::from(a.force_address) + u32::from(a.force_data_type.words()) - 1;
    if force_last > u32::from(u16::MAX) {
        bad(
            "modbus.actuator.force_address",
            "the drive value runs past 65535".into(),
        );
    }
    if (u32::from(a.force_address)..=force_last).contains(&u32::from(a.enable_address)) {
        bad(
            "modbus.actuator.enable_address",
            "overlaps the drive value".into(),
        );
    }
    if a.enable_on_value == a.enable_off_value {
        bad(
            "modbus.actuator.enable_on_value",
            "equals enable_off_value".into(),
        );
    }
    if !(a.force_scale.is_finite() && a.force_scale != 0.0) {
        bad(
            "modbus.actuator.force_scale",
            format!("{} is not a finite non-zero scale", a.force_scale),
        );
    }
    if !a.force_offset.is_finite() {
        bad(
            "modbus.actuator.force_offset",
            format!("{} is not finite", a.force_offset),
        );
    }
    if !(10..=60_000).contains(&a.refresh_period_ms) {
        bad(
            "modbus.actuator.refresh_period_ms",
            format!("{} is outside 10..=60000", a.refresh_period_ms),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ModbusConfig {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problems(config: &ModbusConfig) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        config.validate_into(&mut problems);
        problems
    }

    const GOOD: &str = r#"
        [[devices]]
        name = "sim"
        tcp = { addr = "127.0.0.1:5020" }
        poll_period_ms = 50
        [[devices.registers]]
        channel = "mb_floor1_accel"
        table = "input"
        address = 0
        data_type = "f32"
        resolution = 1e-6
        unit = "m/s^2"
        kind = "acceleration"
        floor = 1
        [[devices.registers]]
        channel = "mb_sample_count_lo"
        table = "input"
        address = 11

        [[devices]]
        name = "amp1"
        rtu = { path = "/dev/ttyUSB0", baud = 115200 }
        unit_id = 1
        [[devices.registers]]
        channel = "amp1_temp"
        table = "holding"
        address = 3
        data_type = "i16"
        scale = 0.1

        [[devices]]
        name = "amp2"
        rtu = { path = "/dev/ttyUSB0", baud = 115200 }
        unit_id = 2
        [[devices.registers]]
        channel = "amp2_on"
        table = "coil"
        address = 0

        [actuator]
        device = "sim"
        enable_address = 0
        force_address = 1
    "#;

    #[test]
    fn a_good_register_map_parses_with_defaults_and_validates() {
        let config = parse(GOOD);
        assert_eq!(problems(&config), []);
        let amp = &config.devices[1];
        let rtu = amp.rtu.as_ref().unwrap_or_else(|| panic!("no rtu"));
        assert_eq!(rtu.parity, Parity::Even);
        assert_eq!((rtu.stop_bits, rtu.data_bits), (1, 8));
        assert_eq!(amp.request_timeout_ms, 200);
        assert_eq!(amp.registers[0].word_order, WordOrder::Big);
        assert_eq!(config.devices[2].registers[0].data_type(), DataType::Bool);
        assert_eq!(config.devices[0].registers[1].data_type(), DataType::U16);
        let actuator = config.actuator.as_ref().unwrap_or_else(|| panic!("none"));
        assert_eq!(actuator.force_data_type, DataType::F32);
        assert_eq!(actuator.refresh_period_ms, 200);
    }

    #[test]
    fn reports_every_register_map_problem_at_once() {
        let config = parse(
            r#"
            [[devices]]
            name = "a"
            tcp = { addr = "127.0.0.1:502" }
            rtu = { path = "/dev/ttyUSB0" }
            request_timeout_ms = 0
            max_registers_per_read = 126
            [[devices.registers]]
            channel = "x"
            table = "holding"
            address = 10
            data_type = "f32"
            [[devices.registers]]
            channel = "x"
            table = "holding"
            address = 11
            [[devices.registers]]
            channel = "flag"
            table = "coil"
            address = 0
            data_type = "u16"
            [[devices.registers]]
            channel = "end"
            table = "input"
            address = 65535
            data_type = "u32"
            scale = 0.0

            [[devices]]
            name = "b"
            rtu = { path = "/dev/ttyUSB0", baud = 9600, data_bits = 7 }
            unit_id = 0
            poll_period_ms = 0
            [[devices.registers]]
            channel = "b1"
            table = "input"
            address = 0
            resolution = 0.1

            [[devices]]
            name = "c"
            rtu = { path = "/dev/ttyUSB0", baud = 19200 }

            [actuator]
            device = "nope"
            enable_address = 1
            force_address = 0
            "#,
        );
        let found: Vec<_> = problems(&config).into_iter().map(|p| p.field).collect();
        assert_eq!(
            found,
            [
                "modbus.devices",
                "modbus.devices.request_timeout_ms",
                "modbus.devices.max_registers_per_read",
                // f32 without a resolution
                "modbus.devices.registers.resolution",
                "modbus.devices.registers.channel",
                "modbus.devices.registers.address",
                "modbus.devices.registers.data_type",
                "modbus.devices.registers.address",
                "modbus.devices.registers.scale",
                "modbus.devices.rtu.data_bits",
                "modbus.devices.unit_id",
                "modbus.devices.poll_period_ms",
                "modbus.devices.registers.resolution",
                "modbus.devices.rtu",
                "modbus.actuator.device",
                "modbus.actuator.enable_address",
            ]
        );
    }

    #[test]
    fn the_commented_example_in_the_shipped_config_parses_and_validates() {
        // The example config documents [modbus] in comments; uncommented, it must be valid.
        let example = crate::config::EXAMPLE_CONFIG;
        let start = example
            .find("# [[modbus.devices]]")
            .unwrap_or_else(|| panic!("no Modbus example"));
        let text: String = example[start..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                let t = l.trim_start();
                t.starts_with('[') || t.split_once(" = ").is_some()
            })
            .map(|l| l.replace("modbus.", ""))
            .collect::<Vec<_>>()
            .join("\n");
        let config = parse(&text);
        assert_eq!(problems(&config), []);
        assert_eq!(config.devices.len(), 2);
        assert_eq!(config.devices[0].registers[0].resolution, Some(1e-6));
        assert!(config.actuator.is_some());
    }

    #[test]
    fn refuses_unknown_keys() {
        let text = GOOD.replace("poll_period_ms = 50", "poll_period_ms = 50\npoll_hz = 3");
        assert!(toml::from_str::<ModbusConfig>(&text).is_err());
    }

    #[test]
    fn refuses_the_same_slave_twice_on_one_line() {
        let text = GOOD.replace("unit_id = 2", "unit_id = 1");
        let found: Vec<_> = problems(&parse(&text))
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(found, ["modbus.devices.unit_id"]);
    }
}
