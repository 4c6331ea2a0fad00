//! Reads the rig simulator's ground-truth log: every sample it sent over the pty, as raw counts.
//! Format (written by `dtop-rig-sim --truth-log`): CSV `sample_index,raw0,raw1,...`, one row per sample.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Every sample the simulator sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// Sample index of each row.
    pub indices: Vec<u64>,
    /// `raw[row][channel]` in manifest order.
    pub raw: Vec<Vec<i32>>,
}

impl Truth {
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut truth = Truth {
            indices: Vec::new(),
            raw: Vec::new(),
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(|c: char| c.is_ascii_alphabetic()) {
                continue; // header
            }
            let mut fields = line.split(',');
            let index = fields
                .next()
                .and_then(|f| f.trim().parse::<u64>().ok())
                .with_context(|| format!("line {}: bad sample index in {line:?}", n + 1))?;
            let raw = fields
                .map(|f| f.trim().parse::<i32>())
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("line {}: bad raw value in {line:?}", n + 1))?;
            truth.indices.push(index);
            truth.raw.push(raw);
        }
        Ok(truth)
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Fails unless the indices are 0, 1, 2, ... with no gap: the simulator sent every sample.
    pub fn ensure_contiguous_from_zero(&self) -> Result<()> {
        for (k, &index) in self.indices.iter().enumerate() {
            if index != k as u64 {
                bail!(
                    "truth log row {k} has sample index {index}: the simulator dropped or reordered samples"
                );
            }
        }
        Ok(())
    }
}
