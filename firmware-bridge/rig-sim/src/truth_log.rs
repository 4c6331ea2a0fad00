//! Owns the ground-truth CSV of every sample written to the pty, so end-to-end tests can
//! compare storage against what the "hardware" really sent, and the CSV of every structural
//! change beside it (`<truth log>.changes.csv`), so they know the structure's truth too.
//! Formatting is pure; the file handles are the only I/O here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dtop_firmware::Samples;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::config::DamageConfig;
use crate::error::SimError;

/// First line of the file.
pub const HEADER: &str = "sample_index,raw0,raw1,raw2,raw3\n";

/// First line of the changes log beside the truth log ([`changes_path`]).
pub const CHANGES_HEADER: &str =
    "from_sample_index,at_s,storey,stiffness_factor,damping_factor,ramp_s,source\n";

/// Where the structural changes of a run are logged: the truth log's path with
/// `.changes.csv` appended. The truth log itself stays one row per sample.
pub fn changes_path(truth_log: &Path) -> PathBuf {
    let mut name = truth_log.as_os_str().to_owned();
    name.push(".changes.csv");
    PathBuf::from(name)
}

/// Index of the first sample whose time (index / `sample_rate_hz`) is at or after `at_s`: the
/// first sample a change beginning at `at_s` acts on. A millionth of a sample of slack
/// absorbs the rounding of `at_s` = index / rate back to the index.
pub fn first_sample_index(at_s: f64, sample_rate_hz: f64) -> u64 {
    (at_s * sample_rate_hz - 1e-6).ceil().max(0.0) as u64
}

/// Appends the CSV row of one structural change to `out`: the index of the first sample it
/// acts on (the first whose time is at or after `at_s` at `sample_rate_hz`), the change, and
/// where it came from (`config` or `command`).
pub fn format_change(change: &DamageConfig, sample_rate_hz: f64, source: &str, out: &mut String) {
    let from = first_sample_index(change.at_s, sample_rate_hz);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{from},{},{},{},{},{},{source}",
        change.at_s, change.storey, change.stiffness_factor, change.damping_factor, change.ramp_s
    );
}

/// Writes the changes log: its header and the changes of the config, truncating.
pub async fn create_changes(
    path: &Path,
    scheduled: &[DamageConfig],
    sample_rate_hz: f64,
) -> Result<(), SimError> {
    let mut text = CHANGES_HEADER.to_owned();
    for change in scheduled {
        format_change(change, sample_rate_hz, "config", &mut text);
    }
    tokio::fs::write(path, text)
        .await
        .map_err(|source| SimError::TruthLog {
            path: path.to_owned(),
            source,
        })
}

/// Appends one run-time change to the changes log.
pub async fn append_change(
    path: &Path,
    change: &DamageConfig,
    sample_rate_hz: f64,
) -> Result<(), SimError> {
    let mut row = String::new();
    format_change(change, sample_rate_hz, "command", &mut row);
    let err = |source| SimError::TruthLog {
        path: path.to_owned(),
        source,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .map_err(err)?;
    file.write_all(row.as_bytes()).await.map_err(err)?;
    file.flush().await.map_err(err)
}

/// Appends one CSV row per sample of `samples` to `out`.
pub fn format_rows(samples: &Samples, out: &mut String) {
    let channels = usize::from(samples.channel_count).max(1);
    for (s, row) in samples.raw.chunks(channels).enumerate() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", samples.first_sample_index + s as u64);
        for value in row {
            let _ = write!(out, ",{value}");
        }
        out.push('\n');
    }
}

/// The open truth log.
#[derive(Debug)]
pub struct TruthLog {
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    /// Reused row buffer, so logging does not allocate per frame.
    line: String,
}

impl TruthLog {
    /// Creates (truncates) the file and writes the header.
    pub async fn create(path: &Path) -> Result<Self, SimError> {
        let err = |source| SimError::TruthLog {
            path: path.to_owned(),
            source,
        };
        let file = tokio::fs::File::create(path).await.map_err(err)?;
        let mut log = Self {
            path: path.to_owned(),
            file: BufWriter::new(file),
            line: String::new(),
        };
        log.file.write_all(HEADER.as_bytes()).await.map_err(err)?;
        Ok(log)
    }

    /// Buffers the rows of one frame.
    pub async fn append(&mut self, samples: &Samples) -> Result<(), SimError> {
        self.line.clear();
        format_rows(samples, &mut self.line);
        self.file
            .write_all(self.line.as_bytes())
            .await
            .map_err(|source| self.error(source))
    }

    /// Pushes everything buffered to the OS.
    pub async fn flush(&mut self) -> Result<(), SimError> {
        self.file.flush().await.map_err(|source| self.error(source))
    }

    fn error(&self, source: std::io::Error) -> SimError {
        SimError::TruthLog {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_one_row_per_sample_with_its_index() {
        let samples = Samples {
            first_sample_index: 40,
            channel_count: 4,
            raw: vec![1, -2, 3, -4, 5, 6, 7, 8],
        };
        let mut out = String::new();
        format_rows(&samples, &mut out);
        assert_eq!(out, "40,1,-2,3,-4\n41,5,6,7,8\n");
    }

    #[tokio::test]
    async fn logs_the_configured_and_the_commanded_changes_beside_the_truth_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = changes_path(&dir.path().join("truth.csv"));
        assert_eq!(path, dir.path().join("truth.csv.changes.csv"));
        let configured = DamageConfig {
            storey: 2,
            stiffness_factor: 0.9,
            damping_factor: 1.0,
            at_s: 300.0,
            ramp_s: 0.0,
        };
        create_changes(&path, &[configured], 1000.0).await.unwrap();
        let commanded = DamageConfig {
            storey: 3,
            stiffness_factor: 1.0,
            damping_factor: 2.0,
            at_s: 1.2345,
            ramp_s: 5.0,
        };
        append_change(&path, &commanded, 1000.0).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{CHANGES_HEADER}300000,300,2,0.9,1,0,config\n1235,1.2345,3,1,2,5,command\n")
        );
    }

    #[tokio::test]
    async fn writes_header_and_rows_to_disk_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        let mut log = TruthLog::create(&path).await.unwrap();
        log.append(&Samples {
            first_sample_index: 0,
            channel_count: 4,
            raw: vec![1, 2, 3, 4],
        })
        .await
        .unwrap();
        log.flush().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{HEADER}0,1,2,3,4\n")
        );
    }
}
