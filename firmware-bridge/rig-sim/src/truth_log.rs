//! Owns the ground-truth CSV of every sample written to the pty, so end-to-end tests can
//! compare storage against what the "hardware" really sent. Formatting is a pure function;
//! the file handle is the only I/O here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use dtop_firmware::Samples;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::error::SimError;

/// First line of the file.
pub const HEADER: &str = "sample_index,raw0,raw1,raw2,raw3\n";

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
