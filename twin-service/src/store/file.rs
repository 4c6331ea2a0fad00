//! The file sink: line protocol appended to rotating `.lp` files of at most 8 MiB.
//!
//! Each file can be replayed into InfluxDB as is (`curl --data-binary @FILE`); the precision is
//! part of the name because the replay must state it. Owns the open file; knows nothing of HTTP.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};

use super::{StoreError, WriteError};
use crate::config::FileStorageConfig;
use crate::lineproto::Precision;

/// Largest file, bytes: small enough for one InfluxDB request body (default limit 25 MB).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Appends batches to `dir/dtop-<UTC time>-<precision>.lp`, rotating before a file would pass
/// its size limit. Lines are never split across files.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
    precision: Precision,
    max_file_bytes: u64,
    current: Option<OpenFile>,
    /// Name time of the latest file opened, ns.
    last_stamp_ns: Option<u128>,
    /// A write failed midway; the file may end in a partial line, so the retry starts a new one.
    rotate_before_next_write: bool,
}

#[derive(Debug)]
struct OpenFile {
    file: tokio::fs::File,
    path: PathBuf,
    bytes: u64,
    /// The time in its name, ns.
    stamp_ns: u128,
}

impl FileSink {
    /// Creates the directory if needed; files are opened on the first write.
    pub async fn create(config: &FileStorageConfig) -> Result<Self, StoreError> {
        Self::with_max_file_bytes(config, MAX_FILE_BYTES).await
    }

    /// As [`FileSink::create`], with another size limit (tests).
    pub async fn with_max_file_bytes(
        config: &FileStorageConfig,
        max_file_bytes: u64,
    ) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(&config.dir)
            .await
            .map_err(|source| StoreError::CreateDir {
                path: config.dir.clone(),
                source,
            })?;
        Ok(Self {
            dir: config.dir.clone(),
            precision: config.precision,
            max_file_bytes: max_file_bytes.max(1),
            current: None,
            last_stamp_ns: None,
            rotate_before_next_write: false,
        })
    }

    /// Path of the file being written, if any.
    pub fn current_path(&self) -> Option<&Path> {
        self.current.as_ref().map(|f| f.path.as_path())
    }

    pub async fn write(&mut self, body: &Bytes) -> Result<(), WriteError> {
        if self.rotate_before_next_write {
            self.rotate_before_next_write = false;
            if let Some(old) = self.current.take() {
                // The old file already failed once; a second failure changes nothing.
                if let Err(e) = finish(old).await {
                    warn!(error = %e, "Could not close a storage file after a failed write.");
                }
            }
        }
        let result = self.write_inner(body).await;
        if let Err(e) = &result {
            warn!(error = %e, "Writing to a storage file failed.");
            self.rotate_before_next_write = true;
        }
        result.map_err(|e| WriteError::Retryable {
            detail: e.to_string(),
            retry_after: None,
        })
    }

    async fn write_inner(&mut self, body: &[u8]) -> std::io::Result<()> {
        let mut rest = body;
        while !rest.is_empty() {
            let current = match &mut self.current {
                Some(c) => c,
                None => {
                    let file = open_new(&self.dir, self.precision, self.last_stamp_ns).await?;
                    self.last_stamp_ns = Some(file.stamp_ns);
                    self.current.insert(file)
                }
            };
            let room = self.max_file_bytes.saturating_sub(current.bytes);
            let take = lines_fitting(rest, room, current.bytes == 0);
            if take == 0 {
                self.rotate().await?;
                continue;
            }
            current.file.write_all(&rest[..take]).await?;
            current.bytes += take as u64;
            rest = &rest[take..];
            if !rest.is_empty() {
                self.rotate().await?;
            }
        }
        if let Some(c) = &mut self.current {
            c.file.flush().await?;
        }
        Ok(())
    }

    async fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(old) = self.current.take() {
            finish(old).await?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the open file.
    pub async fn close(&mut self) -> Result<(), WriteError> {
        self.rotate().await.map_err(|e| WriteError::Retryable {
            detail: e.to_string(),
            retry_after: None,
        })
    }
}

/// How many leading bytes of `rest` to put in a file with `room` bytes left: whole lines only.
/// An empty file takes at least one line, however long, so a giant line cannot stall the sink.
fn lines_fitting(rest: &[u8], room: u64, file_is_empty: bool) -> usize {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if rest.len() <= room {
        return rest.len();
    }
    match rest[..room].iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if file_is_empty => rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1),
        None => 0,
    }
}

async fn finish(mut old: OpenFile) -> std::io::Result<()> {
    old.file.flush().await?;
    old.file.sync_all().await?;
    debug!(path = %old.path.display(), bytes = old.bytes, "Closed a storage file.");
    Ok(())
}

/// Opens a new file named after the current UTC time, or after `after_ns` + 1 µs if the clock
/// has not moved past it, so names sort in creation order and never collide within a process.
async fn open_new(
    dir: &Path,
    precision: Precision,
    after_ns: Option<u128>,
) -> std::io::Result<OpenFile> {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut stamp_ns = after_ns.map_or(now_ns, |a| now_ns.max(a / 1_000 * 1_000 + 1_000));
    for _ in 0..1000 {
        let path = dir.join(format!(
            "dtop-{}-{}.lp",
            utc_stamp(stamp_ns),
            precision.as_str()
        ));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
        {
            Ok(file) => {
                info!(path = %path.display(), "Opened a new storage file.");
                return Ok(OpenFile {
                    file,
                    path,
                    bytes: 0,
                    stamp_ns,
                });
            }
            // Another process (or an earlier run) took this name: try the next microsecond.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => stamp_ns += 1_000,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no free storage file name"))
}

/// `YYYYMMDDTHHMMSS.ffffffZ` for a Unix time in ns (UTC, proleptic Gregorian).
pub fn utc_stamp(unix_ns: u128) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{micros:06}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000.000000Z");
        // 2023-11-14T22:13:20.123456Z
        assert_eq!(
            utc_stamp(1_700_000_000_123_456_789),
            "20231114T221320.123456Z"
        );
        // 2000-02-29T12:00:00Z, a leap day in a century leap year.
        assert_eq!(
            utc_stamp(951_825_600_000_000_000),
            "20000229T120000.000000Z"
        );
    }

    #[test]
    fn takes_whole_lines_only() {
        let body = b"aaaa\nbb\ncccccc\n";
        assert_eq!(lines_fitting(body, 100, false), body.len());
        assert_eq!(lines_fitting(body, 9, false), 8);
        assert_eq!(lines_fitting(body, 3, false), 0);
        assert_eq!(lines_fitting(body, 3, true), 5);
    }

    #[tokio::test]
    async fn rotates_before_the_size_limit_without_splitting_lines() {
        let dir = tempfile::tempdir().unwrap();
        let config = FileStorageConfig {
            dir: dir.path().join("lines"),
            precision: Precision::Us,
        };
        let mut sink = FileSink::with_max_file_bytes(&config, 20).await.unwrap();
        sink.write(&Bytes::from_static(b"m a=1 1\nm a=2 2\n"))
            .await
            .unwrap();
        sink.write(&Bytes::from_static(b"m a=3 3\nm a=4 4\nm a=5 5\n"))
            .await
            .unwrap();
        sink.close().await.unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&config.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let contents: Vec<String> = files
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert_eq!(
            contents,
            ["m a=1 1\nm a=2 2\n", "m a=3 3\nm a=4 4\n", "m a=5 5\n"]
        );
        for p in &files {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("dtop-") && name.contains("-us") && name.ends_with(".lp"),
                "{name}"
            );
        }
    }
}
