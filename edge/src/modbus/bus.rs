//! One Modbus connection (a TCP socket, or an RTU serial line shared by several slaves), owned by
//! exactly one task: every request is wrapped in a timeout, RTU requests keep the t3.5
//! inter-frame silence (and the turnaround delay after a broadcast), and a lost connection is
//! re-established with jittered backoff. Knows nothing of register maps or samples.

use std::time::Duration;

use dtop_daemon::Backoff;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::slave::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tracing::{info, warn};

use crate::modbus::config::{Parity, RtuConfig, Table, TcpConfig};

/// The t3.5 floor above 19200 bit/s (Modbus over Serial Line v1.02 §2.5.1.1, "it is recommended
/// to use a fixed value of 1.750 ms for the inter-frame delay").
const T3_5_FLOOR_ABOVE_19200: Duration = Duration::from_micros(1_750);

/// Bits one character occupies on the line: start, data, parity, stop.
pub fn bits_per_char(rtu: &RtuConfig) -> u32 {
    1 + u32::from(rtu.data_bits) + u32::from(rtu.parity != Parity::None) + u32::from(rtu.stop_bits)
}

/// Time one character takes on the line.
pub fn char_time(rtu: &RtuConfig) -> Duration {
    Duration::from_nanos(u64::from(bits_per_char(rtu)) * 1_000_000_000 / u64::from(rtu.baud.max(1)))
}

/// The silence that must separate two frames on the line: 3.5 character times, or the fixed
/// 1.75 ms above 19200 bit/s (Modbus over Serial Line §2.5.1.1).
pub fn inter_frame_silence(rtu: &RtuConfig) -> Duration {
    if rtu.baud > 19_200 {
        T3_5_FLOOR_ABOVE_19200
    } else {
        char_time(rtu) * 7 / 2
    }
}

/// Where a bus connects.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Tcp(TcpConfig),
    Rtu(RtuConfig),
}

impl Transport {
    /// The address or path, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Tcp(t) => t.addr.to_string(),
            Self::Rtu(r) => r.path.display().to_string(),
        }
    }
}

/// Why one request produced no data. A device's exception is a value of this type, not a
/// failure of the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No complete response within the request timeout.
    #[error("no response within the request timeout")]
    Timeout,
    /// The device refused the request.
    #[error("the device answered with exception {0:?}")]
    Exception(ExceptionCode),
    /// The connection failed or the response did not match the request.
    #[error("transport: {0}")]
    Transport(String),
    /// Not connected, and the backoff has not yet allowed another attempt.
    #[error("not connected (waiting to reconnect)")]
    NotConnected,
}

/// Words (bits as 0/1) read by one request.
pub type Words = Vec<u16>;

/// The connection and its timing state. One per bus; used by one task only.
pub struct Bus {
    transport: Transport,
    context: Option<Context>,
    /// When the line went quiet (end of the last response, or of a timed-out wait); the next
    /// RTU request starts no earlier than this plus `silence`.
    quiet_since: Option<Instant>,
    /// Extra silence owed after a broadcast (the turnaround delay) instead of t3.5.
    owed_silence: Duration,
    silence: Duration,
    backoff: Backoff,
    next_attempt: Instant,
    rng: StdRng,
    /// Successful (re)connects, for statistics.
    pub connects_total: u64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("transport", &self.transport)
            .field("connected", &self.context.is_some())
            .finish_non_exhaustive()
    }
}

impl Bus {
    pub fn new(transport: Transport) -> Self {
        let (silence, backoff) = match &transport {
            Transport::Tcp(t) => (
                Duration::ZERO,
                Backoff::new(
                    Duration::from_millis(t.reconnect_backoff_min_ms),
                    Duration::from_millis(t.reconnect_backoff_max_ms),
                ),
            ),
            Transport::Rtu(r) => {
                let reopen = Duration::from_millis(r.reopen_delay_ms);
                (inter_frame_silence(r), Backoff::new(reopen, reopen * 8))
            }
        };
        Self {
            transport,
            context: None,
            quiet_since: None,
            owed_silence: Duration::ZERO,
            silence,
            backoff,
            next_attempt: Instant::now(),
            rng: StdRng::from_os_rng(),
            connects_total: 0,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn is_connected(&self) -> bool {
        self.context.is_some()
    }

    /// Connects if not connected and the backoff allows an attempt now.
    async fn connect(&mut self) -> Result<&mut Context, CallError> {
        if self.context.is_none() {
            if Instant::now() < self.next_attempt {
                return Err(CallError::NotConnected);
            }
            match open(&self.transport).await {
                Ok(context) => {
                    self.backoff.reset();
                    self.connects_total += 1;
                    self.quiet_since = Some(Instant::now());
                    info!(bus = %self.transport.describe(), "Modbus bus connected.");
                    self.context = Some(context);
                }
                Err(e) => {
                    let delay = self.backoff.next_delay(&mut self.rng);
                    self.next_attempt = Instant::now() + delay;
                    warn!(bus = %self.transport.describe(), error = %e, retry_in_ms = delay.as_millis() as u64, "Could not connect the Modbus bus.");
                    return Err(CallError::Transport(e));
                }
            }
        }
        self.context.as_mut().ok_or(CallError::NotConnected)
    }

    /// Drops the connection; the next request reconnects after a backoff delay.
    fn drop_connection(&mut self, why: &str) {
        if self.context.take().is_some() {
            let delay = self.backoff.next_delay(&mut self.rng);
            self.next_attempt = Instant::now() + delay;
            warn!(bus = %self.transport.describe(), reason = why, retry_in_ms = delay.as_millis() as u64, "Dropped the Modbus connection.");
        }
    }

    /// Reads `count` words (or bits) of `table` from `unit`, within `request_timeout`.
    pub async fn read(
        &mut self,
        unit: u8,
        table: Table,
        address: u16,
        count: u16,
        request_timeout: Duration,
    ) -> Result<Words, CallError> {
        self.before_request().await;
        let context = self.connect().await?;
        context.set_slave(Slave(unit));
        let call = async {
            match table {
                Table::Holding => context.read_holding_registers(address, count).await,
                Table::Input => context.read_input_registers(address, count).await,
                Table::Coil => context
                    .read_coils(address, count)
                    .await
                    .map(|r| r.map(bits_to_words)),
                Table::Discrete => context
                    .read_discrete_inputs(address, count)
                    .await
                    .map(|r| r.map(bits_to_words)),
            }
        };
        let outcome = timeout(request_timeout, call).await;
        self.after_request();
        match outcome {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(self.failed(e)),
            Ok(Ok(Err(exception))) => Err(CallError::Exception(exception)),
            Ok(Ok(Ok(mut words))) => {
                // Bit reads come back padded to whole bytes.
                words.truncate(usize::from(count));
                if words.len() == usize::from(count) {
                    Ok(words)
                } else {
                    Err(CallError::Transport(format!(
                        "asked for {count} values, got {}",
                        words.len()
                    )))
                }
            }
        }
    }

    /// Writes `words` to holding registers from `address` on `unit` (0x10), within
    /// `request_timeout`. To unit 0 on RTU it is a broadcast: no answer is awaited, and the
    /// turnaround delay is kept before the next request.
    pub async fn write(
        &mut self,
        unit: u8,
        address: u16,
        words: &[u16],
        request_timeout: Duration,
    ) -> Result<(), CallError> {
        self.before_request().await;
        let broadcast = match &self.transport {
            Transport::Rtu(r) if unit == 0 => Some(Duration::from_millis(r.turnaround_delay_ms)),
            _ => None,
        };
        let context = self.connect().await?;
        context.set_slave(Slave(unit));
        let call = context.write_multiple_registers(address, words);
        if let Some(turnaround) = broadcast {
            // Nobody answers a broadcast: the request is out once the wait starts, and the
            // slaves get the turnaround delay to act on it.
            let _ = timeout(request_timeout.min(Duration::from_millis(1)), call).await;
            self.after_request();
            self.owed_silence = turnaround;
            return Ok(());
        }
        let outcome = timeout(request_timeout, call).await;
        self.after_request();
        match outcome {
            Err(_) => Err(self.timed_out()),
            Ok(Err(e)) => Err(self.failed(e)),
            Ok(Ok(Err(exception))) => Err(CallError::Exception(exception)),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }

    /// Waits out the silence the line owes.
    async fn before_request(&mut self) {
        if let Some(quiet) = self.quiet_since {
            let owed = self.silence.max(self.owed_silence);
            wait_precisely_until(quiet + owed).await;
        }
        self.owed_silence = Duration::ZERO;
    }

    fn after_request(&mut self) {
        if matches!(self.transport, Transport::Rtu(_)) {
            self.quiet_since = Some(Instant::now());
        }
    }

    fn timed_out(&mut self) -> CallError {
        // On TCP a late answer would arrive under a stale transaction id: start afresh. On RTU the
        // client clears its buffer before the next request, and the wait for t3.5 lets the line
        // settle.
        if matches!(self.transport, Transport::Tcp(_)) {
            self.context = None;
            // Reconnect at once: a timeout is not evidence that connecting would fail.
            self.next_attempt = Instant::now();
        }
        CallError::Timeout
    }

    fn failed(&mut self, e: tokio_modbus::Error) -> CallError {
        match e {
            tokio_modbus::Error::Transport(io) => {
                let text = io.to_string();
                self.drop_connection(&text);
                CallError::Transport(text)
            }
            // A response meant for an earlier request or another slave: the line is alive.
            tokio_modbus::Error::Protocol(p) => CallError::Transport(p.to_string()),
        }
    }
}

async fn open(transport: &Transport) -> Result<Context, String> {
    match transport {
        Transport::Tcp(t) => {
            let connect = tokio_modbus::client::tcp::connect_slave(t.addr, Slave(1));
            match timeout(Duration::from_millis(t.connect_timeout_ms), connect).await {
                Ok(Ok(context)) => Ok(context),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connect timed out".into()),
            }
        }
        Transport::Rtu(r) => {
            use tokio_serial::SerialPortBuilderExt;
            let path = r.path.to_string_lossy();
            let port = tokio_serial::new(path, r.baud)
                .parity(match r.parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .stop_bits(if r.stop_bits == 2 {
                    tokio_serial::StopBits::Two
                } else {
                    tokio_serial::StopBits::One
                })
                .data_bits(tokio_serial::DataBits::Eight)
                .open_native_async()
                .map_err(|e| e.to_string())?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
        }
    }
}

/// Waits until `deadline` to within tens of microseconds. tokio's timer counts whole
/// milliseconds, which would stretch a 1.75 ms t3.5 by up to a millisecond per frame (15 % of a
/// 115200 bit/s poll); the last stretch is slept on a blocking-pool thread instead, whose
/// `nanosleep` is precise, without spinning a core.
pub async fn wait_precisely_until(deadline: Instant) {
    let coarse = deadline.checked_sub(PRECISE_WAIT);
    if let Some(coarse) = coarse
        && coarse > Instant::now()
    {
        sleep_until(coarse).await;
    }
    let rest = deadline.saturating_duration_since(Instant::now());
    if !rest.is_zero() {
        let slept = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
        if slept.is_err() {
            // The blocking pool is shutting down (runtime teardown): fall back to the timer.
            sleep_until(deadline).await;
        }
    }
}

/// The tail of a silence slept precisely; longer waits use the timer for the rest.
const PRECISE_WAIT: Duration = Duration::from_millis(3);

fn bits_to_words(bits: Vec<bool>) -> Words {
    bits.into_iter().map(u16::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(baud: u32, parity: Parity, stop_bits: u8) -> RtuConfig {
        RtuConfig {
            path: "/dev/null".into(),
            baud,
            parity,
            stop_bits,
            data_bits: 8,
            turnaround_delay_ms: 100,
            reopen_delay_ms: 1_000,
        }
    }

    #[test]
    fn silence_is_three_and_a_half_characters_up_to_19200_baud() {
        // 8E1 = 11 bits; at 9600 bit/s a character takes 1145.8 µs, t3.5 = 4010 µs.
        let l = line(9_600, Parity::Even, 1);
        assert_eq!(bits_per_char(&l), 11);
        assert_eq!(char_time(&l), Duration::from_nanos(1_145_833));
        assert_eq!(inter_frame_silence(&l), Duration::from_nanos(4_010_415));
        // 8N1 = 10 bits at 19200: 520.8 µs per character, t3.5 = 1822.9 µs.
        let l = line(19_200, Parity::None, 1);
        assert_eq!(inter_frame_silence(&l), Duration::from_nanos(1_822_915));
    }

    #[test]
    fn silence_is_fixed_at_1750_us_above_19200_baud() {
        for baud in [38_400, 115_200, 921_600] {
            assert_eq!(
                inter_frame_silence(&line(baud, Parity::None, 2)),
                Duration::from_micros(1_750)
            );
        }
        assert_eq!(
            char_time(&line(115_200, Parity::None, 1)),
            Duration::from_nanos(86_805)
        );
    }
}
