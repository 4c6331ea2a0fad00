//! The bus task: owns one [`Bus`] and serialises everything that uses it: the poll schedule of
//! each device on it (one sample per period, on a wall-clock grid) and the Modbus actuator, if
//! its device sits on this bus. Hands samples to the acquisition task; a timeout or exception
//! costs one sample and a counter, never the task.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::acquisition::wall_clock_ns;
use crate::modbus::actuator::{ActuatorOutput, ModbusLinkReport, ModbusSetpoint, setpoint_writes};
use crate::modbus::bus::{Bus, CallError, Transport};
use crate::modbus::config::{DeviceConfig, ModbusConfig};
use crate::modbus::decode::{RAW_NO_VALUE, decode_value, to_raw};
use crate::modbus::plan::{ReadRequest, plan_reads};
use crate::modbus::streams::{PolledSample, polled_streams};
use crate::stats::StatsHandle;

/// Counters of one Modbus device, in [`crate::EdgeStats::modbus`] (written by its bus task),
/// exported on `/metrics` and in the status topic.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModbusDeviceStats {
    /// Requests sent (reads and writes), whatever their outcome.
    pub requests_total: u64,
    /// Requests without a complete response within `request_timeout_ms`.
    pub timeouts_total: u64,
    /// Requests the device refused with an exception.
    pub exceptions_total: u64,
    /// Requests lost to a connection failure or a mismatched response.
    pub transport_errors_total: u64,
    /// Successful (re)connects of the device's bus.
    pub connects_total: u64,
    /// Samples handed to the acquisition task (some of their values may be missing: see the
    /// two maps below).
    pub samples_total: u64,
    /// Poll periods that produced no sample (a request timed out or the connection failed, an
    /// overrun schedule, or a full queue). A refused register or an out-of-range value costs
    /// only that channel's value, not the sample.
    pub samples_missed_total: u64,
    /// Exceptions per channel: every register a refused read carried. Each one is a sample
    /// published with [`RAW_NO_VALUE`] for that channel.
    pub exceptions_by_channel: BTreeMap<String, u64>,
    /// Values that did not fit the block's integer encoding, per channel; each one is published
    /// as [`RAW_NO_VALUE`].
    pub out_of_range_by_channel: BTreeMap<String, u64>,
    /// Actuator setpoints written (all of their requests acknowledged).
    pub actuator_writes_total: u64,
    /// Actuator setpoints not written (a request failed, or the force did not encode).
    pub actuator_write_failures_total: u64,
    /// The last write the device acknowledged enabled the actuator.
    pub actuator_enabled: bool,
    /// Force of the last write the device acknowledged, N.
    pub actuator_force_n: f64,
    /// The last actuator write was acknowledged (false before any, and while writes fail).
    pub actuator_acknowledged: bool,
    /// Times the actuator acknowledged nothing for longer than the drive timeout while it was
    /// to drive: each one latched the safety envelope until an operator's reset.
    pub actuator_link_losses_total: u64,
}

/// Samples waiting for the acquisition task, per bus; beyond this they are dropped and counted
/// rather than stalling the poll clock.
pub const POLLED_QUEUE_CAPACITY: usize = 256;

/// A device's poll schedule and plan.
#[derive(Debug)]
struct PolledDevice {
    cfg: DeviceConfig,
    plan: Vec<ReadRequest>,
    stream_id: u32,
    period: Duration,
    /// Instant of sample index 0, and its wall-clock time (a whole number of periods).
    start: Instant,
    t0_ns: u64,
    next_index: u64,
    /// False after a failed poll, so a dead device logs once, not every period.
    healthy: bool,
    /// Registers published without a value at the last poll, so changes log once.
    flagged: Vec<usize>,
}

impl PolledDevice {
    fn new(cfg: DeviceConfig, stream_id: u32) -> Self {
        let period = cfg.poll_period().max(Duration::from_millis(1));
        let period_ns = period.as_nanos() as u64;
        // Put sample index 0 on the next whole period of the wall clock, so timestamps of a
        // 100 ms poll fall on whole tenths of a second.
        let now_ns = wall_clock_ns();
        let t0_ns = now_ns - now_ns % period_ns + period_ns;
        let start = Instant::now() + Duration::from_nanos(t0_ns - now_ns);
        Self {
            plan: plan_reads(&cfg),
            cfg,
            stream_id,
            period,
            start,
            t0_ns,
            next_index: 0,
            healthy: true,
            flagged: Vec::new(),
        }
    }

    fn due(&self) -> Instant {
        let period_ns = self.period.as_nanos() as u64;
        self.start + Duration::from_nanos(period_ns.saturating_mul(self.next_index))
    }
}

/// Everything one bus task owns.
#[derive(Debug)]
pub struct BusTask {
    bus: Bus,
    devices: Vec<PolledDevice>,
    actuator: Option<(String, ActuatorOutput)>,
    /// The setpoint sender is gone: hold the safe state.
    setpoint_gone: bool,
    samples_tx: mpsc::Sender<PolledSample>,
    stats: StatsHandle,
}

/// The Modbus actuator's two links with the safety envelope (the serial task).
#[derive(Debug)]
pub struct ActuatorChannels {
    /// What the envelope wants written.
    pub setpoint_rx: watch::Receiver<ModbusSetpoint>,
    /// Declared link losses, for the envelope to latch on.
    pub link_tx: watch::Sender<ModbusLinkReport>,
}

/// Starts one task per bus: each TCP device gets its own connection, RTU devices that share a
/// serial path share one task. The actuator (if configured and `actuator` is given) joins
/// the task of its device. Every task stops when `cancel` fires, leaving the actuator safe.
pub fn spawn_buses(
    config: &ModbusConfig,
    samples_tx: mpsc::Sender<PolledSample>,
    actuator: Option<ActuatorChannels>,
    cancel: CancellationToken,
    stats: StatsHandle,
) -> Vec<JoinHandle<()>> {
    let streams: BTreeMap<usize, u32> = polled_streams(config)
        .into_iter()
        .map(|s| (s.device, s.stream_id))
        .collect();
    let actuator_device = config.actuator.as_ref().map(|a| a.device.as_str());
    let mut channels = actuator;
    // (transport, device indices) per bus, in config order.
    let mut buses: Vec<(Transport, Vec<usize>)> = Vec::new();
    for (i, d) in config.devices.iter().enumerate() {
        let hosts_actuator = actuator_device == Some(d.name.as_str()) && channels.is_some();
        if !streams.contains_key(&i) && !hosts_actuator {
            continue;
        }
        match (&d.tcp, &d.rtu) {
            (Some(t), _) => buses.push((Transport::Tcp(t.clone()), vec![i])),
            (None, Some(r)) => {
                match buses
                    .iter_mut()
                    .find(|(t, _)| matches!(t, Transport::Rtu(o) if o.path == r.path))
                {
                    Some((_, members)) => members.push(i),
                    None => buses.push((Transport::Rtu(r.clone()), vec![i])),
                }
            }
            (None, None) => {}
        }
    }
    for warning in crate::modbus::overflow_warnings(config) {
        warn!("{warning}");
    }
    stats.update(|s| {
        for d in &config.devices {
            s.modbus.entry(d.name.clone()).or_default();
        }
    });
    buses
        .into_iter()
        .map(|(transport, members)| {
            let devices = members
                .iter()
                .filter_map(|i| {
                    let stream_id = *streams.get(i)?;
                    Some(PolledDevice::new(config.devices[*i].clone(), stream_id))
                })
                .collect();
            let actuator = match (
                &config.actuator,
                members
                    .iter()
                    .find(|&&i| Some(config.devices[i].name.as_str()) == actuator_device),
            ) {
                (Some(a), Some(&i)) => channels.take().map(|c| {
                    let device = &config.devices[i];
                    let mut output = ActuatorOutput::new(a.clone(), device, c.setpoint_rx);
                    output.link_tx = Some(c.link_tx);
                    (device.name.clone(), output)
                }),
                _ => None,
            };
            let task = BusTask {
                bus: Bus::new(transport),
                devices,
                actuator,
                setpoint_gone: false,
                samples_tx: samples_tx.clone(),
                stats: stats.clone(),
            };
            tokio::spawn(task.run(cancel.clone()))
        })
        .collect()
}

/// Why the Modbus actuator cannot run.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ModbusActuatorError {
    #[error("no [modbus.actuator] is configured")]
    NotConfigured,
    #[error("the actuator's device {0:?} is not in modbus.devices")]
    UnknownDevice(String),
}

/// Runs the Modbus actuator alone on its own connection until `cancel` fires, writing each
/// setpoint from `setpoint_rx` (and refreshing it while enabled), then writes the safe state
/// (disabled, 0 N) and returns. For an actuator whose RTU line is also polled, pass the setpoint
/// receiver to [`spawn_buses`] instead, so that one task owns the line.
pub async fn run_modbus_actuator(
    config: &ModbusConfig,
    channels: ActuatorChannels,
    cancel: CancellationToken,
    stats: StatsHandle,
) -> Result<(), ModbusActuatorError> {
    let a = config
        .actuator
        .as_ref()
        .ok_or(ModbusActuatorError::NotConfigured)?;
    let device = config
        .devices
        .iter()
        .find(|d| d.name == a.device)
        .ok_or_else(|| ModbusActuatorError::UnknownDevice(a.device.clone()))?;
    let transport = match (&device.tcp, &device.rtu) {
        (Some(t), _) => Transport::Tcp(t.clone()),
        (None, Some(r)) => Transport::Rtu(r.clone()),
        (None, None) => return Err(ModbusActuatorError::UnknownDevice(a.device.clone())),
    };
    stats.update(|s| {
        s.modbus.entry(device.name.clone()).or_default();
    });
    let (samples_tx, _samples_rx) = mpsc::channel(1);
    let task = BusTask {
        bus: Bus::new(transport),
        devices: Vec::new(),
        actuator: Some((device.name.clone(), {
            let mut output = ActuatorOutput::new(a.clone(), device, channels.setpoint_rx);
            output.link_tx = Some(channels.link_tx);
            output
        })),
        setpoint_gone: false,
        samples_tx,
        stats,
    };
    task.run(cancel).await;
    Ok(())
}

impl BusTask {
    /// Polls and writes until `cancel` fires; then leaves the actuator safe.
    pub async fn run(mut self, cancel: CancellationToken) {
        info!(
            bus = %self.bus.transport().describe(),
            devices = self.devices.len(),
            actuator = self.actuator.is_some(),
            "Modbus bus task started."
        );
        loop {
            let now = Instant::now();
            let mut wake = self.devices.iter().map(PolledDevice::due).min();
            if let Some((_, a)) = &self.actuator {
                let refresh = if self.setpoint_gone {
                    None
                } else {
                    a.next_due(now)
                };
                wake = match (wake, refresh) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            let wake = wake.unwrap_or(now + Duration::from_secs(3600));
            let setpoint_gone = self.setpoint_gone;
            let setpoint_changed = async {
                match &mut self.actuator {
                    Some((_, a)) if !setpoint_gone => a.setpoint_rx.changed().await.is_err(),
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                gone = setpoint_changed => {
                    if gone {
                        warn!("The Modbus actuator's setpoint source is gone; holding the safe state.");
                        self.setpoint_gone = true;
                    }
                }
                () = sleep_until(wake) => {}
            }
            // The actuator goes first: a late drive is worse than a late sample.
            self.write_actuator(false).await;
            for i in 0..self.devices.len() {
                if self.devices[i].due() <= Instant::now() {
                    self.poll(i).await;
                }
            }
        }
        if self.actuator.is_some() {
            self.write_actuator(true).await;
        }
        info!(bus = %self.bus.transport().describe(), "Modbus bus task stopped.");
    }

    /// Writes the actuator's setpoint if one is due (always the safe state when `safe`), and
    /// reports what the device acknowledged.
    async fn write_actuator(&mut self, safe: bool) {
        let Some((name, a)) = &mut self.actuator else {
            return;
        };
        let at = Instant::now();
        let wanted = if safe || self.setpoint_gone {
            if !safe && a.is_safe() {
                return;
            }
            ModbusSetpoint::SAFE
        } else {
            match a.due(at) {
                Some(s) => s,
                None => return,
            }
        };
        let (setpoint, declared) = a.guard.filter(wanted, at);
        if declared {
            warn!(device = %name, link_timeout_ms = wanted.link_timeout.as_millis() as u64, force_n = wanted.force_n, "The Modbus actuator acknowledged no write for longer than the drive timeout; writing only the safe state until an operator resets the safety envelope (IEC 60204-1, no unexpected start-up).");
            if let Some(tx) = &a.link_tx {
                tx.send_replace(ModbusLinkReport {
                    link_losses_n: a.guard.link_losses_n,
                });
            }
        }
        let mut delta = Delta::default();
        let ok = match setpoint_writes(&a.cfg, setpoint) {
            Ok(writes) => {
                let mut ok = true;
                for w in writes {
                    let outcome = self
                        .bus
                        .write(a.unit_id, w.address, &w.words, a.request_timeout)
                        .await;
                    delta.count(&outcome);
                    if let Err(e) = outcome {
                        if a.attempted.is_none_or(|(_, was_ok)| was_ok) {
                            warn!(device = %name, address = w.address, error = %e, enable = setpoint.enable, force_n = setpoint.force_n, "Modbus actuator write failed; the device's state is unknown until a write is acknowledged.");
                        }
                        ok = false;
                        break;
                    }
                }
                ok
            }
            Err(e) => {
                error!(device = %name, error = %e, "Refused an actuator setpoint the registers cannot carry.");
                false
            }
        };
        a.record(wanted, ok, at, Instant::now());
        let connects = self.bus.connects_total;
        let acknowledged = ok.then_some((
            setpoint.enable,
            if setpoint.enable {
                setpoint.force_n
            } else {
                0.0
            },
        ));
        let link_losses_n = a.guard.link_losses_n;
        self.stats.update(|s| {
            let d = s.modbus.entry(name.clone()).or_default();
            delta.apply(d, connects);
            d.actuator_acknowledged = ok;
            d.actuator_link_losses_total = link_losses_n;
            match acknowledged {
                Some((enable, force_n)) => {
                    d.actuator_writes_total += 1;
                    d.actuator_enabled = enable;
                    d.actuator_force_n = force_n;
                    s.actuator_enabled = enable;
                    s.last_applied_force_n = force_n;
                }
                None => d.actuator_write_failures_total += 1,
            }
            s.actuator_write_failing = !ok;
        });
    }

    /// One poll of device `i`: every planned read, then one sample unless the device stopped
    /// answering. A register it refuses, or a value outside the i32 range, costs that channel's
    /// value only: the sample carries [`RAW_NO_VALUE`] there, and the channel is counted.
    async fn poll(&mut self, i: usize) {
        let device = &mut self.devices[i];
        let index = device.next_index;
        let registers = &device.cfg.registers;
        let mut values: Vec<Option<f64>> = vec![None; registers.len()];
        let mut delta = Delta::default();
        // A timeout or a transport error: the device is not answering, so there is no sample.
        let mut failure: Option<CallError> = None;
        let mut refused: Option<CallError> = None;
        for req in &device.plan {
            let outcome = self
                .bus
                .read(
                    device.cfg.unit_id,
                    req.table,
                    req.address,
                    req.count,
                    device.cfg.request_timeout(),
                )
                .await;
            delta.count(&outcome);
            match outcome {
                Ok(words) => {
                    for &(r, offset) in &req.registers {
                        let reg = &registers[r];
                        values[r] = words.get(usize::from(offset)..).and_then(|w| {
                            decode_value(w, reg.data_type(), reg.word_order, reg.byte_order)
                        });
                    }
                }
                Err(CallError::Exception(code)) => {
                    for &(r, _) in &req.registers {
                        delta.exception_channels.push(registers[r].channel.clone());
                    }
                    refused.get_or_insert(CallError::Exception(code));
                }
                // The device (or the line) is not answering: the rest of this poll would only
                // hold the bus for more timeouts.
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut sent = false;
        let mut flagged = Vec::new();
        if failure.is_none() {
            let mut raw = Vec::with_capacity(registers.len());
            for (r, (reg, value)) in registers.iter().zip(&values).enumerate() {
                let x = match value {
                    Some(v) => to_raw(reg, *v).unwrap_or_else(|| {
                        delta.out_of_range_channels.push(reg.channel.clone());
                        RAW_NO_VALUE
                    }),
                    None => RAW_NO_VALUE,
                };
                if x == RAW_NO_VALUE {
                    flagged.push(r);
                }
                raw.push(x);
            }
            let sample = PolledSample {
                stream_id: device.stream_id,
                sample_index: index,
                timestamp_ns: device.t0_ns + index * device.period.as_nanos() as u64,
                raw,
            };
            sent = self.samples_tx.try_send(sample).is_ok();
            if !sent {
                self.stats.add_samples_dropped(1);
            }
        }
        let mut missed = u64::from(!sent);
        match (&failure, device.healthy) {
            (Some(e), true) => {
                warn!(device = %device.cfg.name, sample_index = index, error = %e, "Modbus poll failed; the sample is missing. Logging again on recovery.");
                device.healthy = false;
            }
            (None, false) => {
                info!(device = %device.cfg.name, sample_index = index, "Modbus device answering again.");
                device.healthy = true;
            }
            _ => {}
        }
        if failure.is_none() && flagged != device.flagged {
            let channels: Vec<&str> = flagged
                .iter()
                .map(|&r| registers[r].channel.as_str())
                .collect();
            if flagged.is_empty() {
                info!(device = %device.cfg.name, sample_index = index, "Every channel of the Modbus device has a value again.");
            } else {
                let refused = refused.as_ref().map(ToString::to_string);
                warn!(device = %device.cfg.name, sample_index = index, ?channels, refused, "Publishing these channels as missing (a refused register or a value outside the i32 range); the others keep their values. Logging again when this changes.");
            }
            device.flagged = flagged;
        }
        // Next index on the grid; periods that already passed are skipped, not bunched.
        let elapsed = Instant::now().saturating_duration_since(device.start);
        let next_on_grid = (elapsed.as_nanos() / device.period.as_nanos().max(1)) as u64 + 1;
        let next = (index + 1).max(next_on_grid);
        missed += next - index - 1;
        device.next_index = next;
        let (name, connects) = (device.cfg.name.clone(), self.bus.connects_total);
        self.stats.update(|s| {
            let d = s.modbus.entry(name).or_default();
            delta.apply(d, connects);
            d.samples_total += u64::from(sent);
            d.samples_missed_total += missed;
        });
    }
}

/// Counter changes of one poll or write, applied to the stats in one update.
#[derive(Debug, Default)]
struct Delta {
    requests: u64,
    timeouts: u64,
    exceptions: u64,
    transport_errors: u64,
    exception_channels: Vec<String>,
    out_of_range_channels: Vec<String>,
}

impl Delta {
    fn count<T>(&mut self, outcome: &Result<T, CallError>) {
        match outcome {
            Err(CallError::NotConnected) => return,
            Err(CallError::Timeout) => self.timeouts += 1,
            Err(CallError::Exception(_)) => self.exceptions += 1,
            Err(CallError::Transport(_)) => self.transport_errors += 1,
            Ok(_) => {}
        }
        self.requests += 1;
    }

    fn apply(self, d: &mut ModbusDeviceStats, connects_total: u64) {
        d.requests_total += self.requests;
        d.timeouts_total += self.timeouts;
        d.exceptions_total += self.exceptions;
        d.transport_errors_total += self.transport_errors;
        d.connects_total = connects_total;
        for c in self.exception_channels {
            *d.exceptions_by_channel.entry(c).or_default() += 1;
        }
        for c in self.out_of_range_channels {
            *d.out_of_range_by_channel.entry(c).or_default() += 1;
        }
    }
}

/// Waits for `handles` after cancellation, at most `grace` (the actuator's safe write is bounded
/// by its request timeout).
pub async fn join_buses(handles: Vec<JoinHandle<()>>, grace: Duration) {
    for h in handles {
        let _ = timeout(grace, h).await;
    }
}
