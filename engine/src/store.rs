//! Owns the result store: a directory of arrays, one file per SHA-256 of the array's canonical
//! JSON, written to a temporary file and renamed so a reader never sees half a file. Knows
//! nothing about the database.

use std::io::Write;
use std::path::{Path, PathBuf};

use dtop_studies::NamedArray;
use sha2::{Digest, Sha256};

use crate::{ArrayRef, EngineError};

/// An array's canonical JSON (serde_json's compact form of [`NamedArray`], fields in
/// declaration order, floats round-tripping) and its SHA-256 in lowercase hex.
pub fn canonical(array: &NamedArray) -> Result<(Vec<u8>, String), EngineError> {
    let bytes = serde_json::to_vec(array)
        .map_err(|e| EngineError::Internal(format!("array {}: {e}", array.name)))?;
    let digest = Sha256::digest(&bytes);
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((bytes, hex))
}

/// The file of the array with this hash.
fn path_of(dir: &Path, sha256_hex: &str) -> PathBuf {
    dir.join(format!("{sha256_hex}.json"))
}

/// Stores `array` (idempotent: the same content lands at the same address) and returns its ref.
///
/// # Errors
/// `Internal` when the directory cannot be written.
pub fn put(dir: &Path, array: &NamedArray) -> Result<ArrayRef, EngineError> {
    let (bytes, sha256_hex) = canonical(array)?;
    let target = path_of(dir, &sha256_hex);
    if !target.exists() {
        let io = |e: std::io::Error| {
            EngineError::Internal(format!("result store {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = dir.join(format!(".{sha256_hex}.{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &target).map_err(io)?;
    }
    Ok(ArrayRef {
        name: array.name.clone(),
        sha256_hex,
        rows: array.rows() as u64,
        columns: array.columns.iter().map(|c| c.name.clone()).collect(),
    })
}

/// Reads the array at `sha256_hex` and checks its hash.
///
/// # Errors
/// `Internal` when the file is missing, unreadable or does not match its hash.
pub fn get(dir: &Path, sha256_hex: &str) -> Result<NamedArray, EngineError> {
    let path = path_of(dir, sha256_hex);
    let bytes = std::fs::read(&path)
        .map_err(|e| EngineError::Internal(format!("result store {}: {e}", path.display())))?;
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if hex != sha256_hex {
        return Err(EngineError::Internal(format!(
            "result store {}: content hash {hex} does not match its name",
            path.display()
        )));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Internal(format!("result store {}: {e}", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use dtop_studies::Column;

    fn array() -> NamedArray {
        NamedArray {
            name: "frf".into(),
            columns: vec![
                Column {
                    name: "f_hz".into(),
                    values: vec![1.0, 2.0, 0.1 + 0.2],
                },
                Column {
                    name: "h".into(),
                    values: vec![3.0, -4.5, 1e-300],
                },
            ],
        }
    }

    #[test]
    fn stores_an_array_at_its_hash_and_reads_it_back_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let r = put(dir.path(), &array()).unwrap();
        assert_eq!(r.rows, 3);
        assert_eq!(r.columns, vec!["f_hz", "h"]);
        // Independent check of the address: the SHA-256 of the bytes on disk.
        let bytes = std::fs::read(dir.path().join(format!("{}.json", r.sha256_hex))).unwrap();
        let hex: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, r.sha256_hex);
        assert_eq!(get(dir.path(), &r.sha256_hex).unwrap(), array());
        // Same content, same address, no second file.
        assert_eq!(put(dir.path(), &array()).unwrap(), r);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_a_file_whose_content_does_not_match_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let r = put(dir.path(), &array()).unwrap();
        std::fs::write(dir.path().join(format!("{}.json", r.sha256_hex)), b"{}").unwrap();
        assert!(matches!(
            get(dir.path(), &r.sha256_hex),
            Err(EngineError::Internal(_))
        ));
    }
}
