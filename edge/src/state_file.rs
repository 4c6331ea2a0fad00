//! The on-disk counters in `state_dir` (`session`, `next_seq`): one decimal number per file,
//! replaced atomically; and small JSON records (`sample_clock.json`) replaced the same way.
//! Blocking std I/O; async callers go through `spawn_blocking` (or accept a tiny write).
//! Knows nothing of what the numbers mean.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Why a counter file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} holds {content:?}, not a decimal counter; fix or remove it (removing it may reuse numbers)"
    )]
    Corrupt { path: PathBuf, content: String },
    #[error("{path} is not the JSON record expected ({source}); fix or remove it")]
    CorruptJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The counter in `path`; `None` when the file does not exist yet.
pub fn read_counter(path: &Path) -> Result<Option<u64>, StateFileError> {
    let Some(text) = read_if_exists(path, fs::read_to_string)? else {
        return Ok(None);
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| StateFileError::Corrupt {
            path: path.to_owned(),
            content: text.chars().take(40).collect(),
        })
}

/// Replaces `path` with `value`: writes a sibling temp file, syncs it, renames it over `path`
/// and syncs the directory, so a crash leaves either the old or the new number, never a torn
/// or empty file.
pub fn write_counter(path: &Path, value: u64) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(err)?;
    writeln!(file, "{value}").map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    }
    Ok(())
}

/// The JSON record in `path`; `None` when the file does not exist yet.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let Some(bytes) = read_if_exists(path, fs::read)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateFileError::CorruptJson {
            path: path.to_owned(),
            source,
        })
}

/// Replaces `path` with `value` as JSON (temporary file, rename) without fsync: it survives a
/// SIGKILL at once, not necessarily a power loss. For records rewritten with every block,
/// whose readers treat a stale or missing one as a weaker start, never as lost data.
pub fn write_json_unsynced<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<(), StateFileError> {
    let err = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec(value).map_err(|e| err(io::Error::other(e)))?;
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// `read(path)`, or `None` when the file does not exist yet: a missing state file is a first
/// start, not an error, while any other read failure must stop the caller.
fn read_if_exists<'p, T>(
    path: &'p Path,
    read: impl FnOnce(&'p Path) -> io::Result<T>,
) -> Result<Option<T>, StateFileError> {
    match read(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateFileError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The sibling `path.tmp` a replacement is written to first, so the rename over `path` is the
/// only step a reader can observe.
fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    tmp_name.push(".tmp");
    path.with_file_name(tmp_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_counter_reads_as_none_and_written_ones_read_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("next_seq");
        assert_eq!(read_counter(&path).ok(), Some(None));
        write_counter(&path, 41).unwrap_or_else(|e| panic!("{e}"));
        write_counter(&path, 42).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_counter(&path).ok(), Some(Some(42)));
        assert!(!dir.path().join("next_seq.tmp").exists());
    }

    #[test]
    fn json_records_read_back_and_a_corrupt_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.json");
        assert_eq!(read_json::<Vec<u64>>(&path).ok(), Some(None));
        write_json_unsynced(&path, &vec![1u64, 2]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_json::<Vec<u64>>(&path).ok(), Some(Some(vec![1, 2])));
        fs::write(&path, "{").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read_json::<Vec<u64>>(&path),
            Err(StateFileError::CorruptJson { .. })
        ));
    }

    #[test]
    fn refuses_a_corrupt_counter() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("session");
        fs::write(&path, "twelve").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            read_counter(&path),
            Err(StateFileError::Corrupt { .. })
        ));
    }
}
