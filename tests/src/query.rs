//! Reads back what storage holds: InfluxDB 1.x through `/query`, VictoriaMetrics through
//! `/api/v1/export`. Parses into plain series so tests compare exact values and timestamps.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::http::blocking_client;

/// One column of a stored series: timestamps (ns since the epoch) and values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub timestamps_ns: Vec<i64>,
    pub values: Vec<f64>,
}

/// Runs an InfluxQL statement against a v1 API and returns the JSON `results`.
pub fn influx_query(base_url: &str, db: &str, q: &str) -> Result<Value> {
    let url = reqwest::Url::parse_with_params(
        &format!("{base_url}/query"),
        &[("db", db), ("q", q), ("epoch", "ns")],
    )?;
    let resp = blocking_client()?.get(url.as_str()).send()?;
    if !resp.status().is_success() {
        bail!("InfluxDB {} for {q:?}: {}", resp.status(), resp.text());
    }
    let json: Value = serde_json::from_str(resp.text())?;
    if let Some(err) = json.pointer("/results/0/error") {
        bail!("InfluxDB error for {q:?}: {err}");
    }
    Ok(json)
}

/// `CREATE DATABASE` (idempotent).
pub fn influx_create_db(base_url: &str, db: &str) -> Result<()> {
    let url = reqwest::Url::parse_with_params(
        &format!("{base_url}/query"),
        &[("q", format!("CREATE DATABASE \"{db}\""))],
    )?;
    let resp = blocking_client()?.post(url.as_str()).send()?;
    if !resp.status().is_success() {
        bail!("CREATE DATABASE {db}: {} {}", resp.status(), resp.text());
    }
    Ok(())
}

/// Every point of `measurement` for `rig`, ordered by time: one [`Series`] per field.
pub fn influx_fields(
    base_url: &str,
    db: &str,
    measurement: &str,
    rig: &str,
) -> Result<BTreeMap<String, Series>> {
    let q = format!("SELECT * FROM \"{measurement}\" WHERE \"rig\" = '{rig}' ORDER BY time ASC");
    let json = influx_query(base_url, db, &q)?;
    let mut out = BTreeMap::new();
    let Some(series) = json.pointer("/results/0/series/0") else {
        return Ok(out);
    };
    let columns: Vec<String> = series["columns"]
        .as_array()
        .context("no columns")?
        .iter()
        .map(|c| c.as_str().unwrap_or_default().to_owned())
        .collect();
    let rows = series["values"].as_array().context("no values")?;
    for row in rows {
        let row = row.as_array().context("row is not an array")?;
        let ts = row
            .first()
            .and_then(Value::as_i64)
            .context("row without time")?;
        for (col, cell) in columns.iter().zip(row).skip(1) {
            if let Some(v) = cell.as_f64() {
                let s: &mut Series = out.entry(col.clone()).or_default();
                s.timestamps_ns.push(ts);
                s.values.push(v);
            }
        }
    }
    Ok(out)
}

/// `SELECT count(field)` for a rig.
pub fn influx_count(
    base_url: &str,
    db: &str,
    measurement: &str,
    field: &str,
    rig: &str,
) -> Result<u64> {
    let q = format!("SELECT count(\"{field}\") FROM \"{measurement}\" WHERE \"rig\" = '{rig}'");
    let json = influx_query(base_url, db, &q)?;
    Ok(json
        .pointer("/results/0/series/0/values/0/1")
        .and_then(Value::as_u64)
        .unwrap_or(0))
}

/// Every raw point VictoriaMetrics holds for series matching `selector`, keyed by metric name.
/// VictoriaMetrics stores ms timestamps; they are returned here in ns.
pub fn vm_export(base_url: &str, selector: &str) -> Result<BTreeMap<String, Series>> {
    let url = reqwest::Url::parse_with_params(
        &format!("{base_url}/api/v1/export"),
        &[("match[]", selector)],
    )?;
    let resp = blocking_client()?.get(url.as_str()).send()?;
    if !resp.status().is_success() {
        bail!("VictoriaMetrics export {}: {}", resp.status(), resp.text());
    }
    let mut out: BTreeMap<String, Series> = BTreeMap::new();
    for line in resp.text().lines().filter(|l| !l.trim().is_empty()) {
        let json: Value = serde_json::from_str(line)?;
        let name = json
            .pointer("/metric/__name__")
            .and_then(Value::as_str)
            .context("no __name__")?
            .to_owned();
        let values = json["values"].as_array().context("no values")?;
        let stamps = json["timestamps"].as_array().context("no timestamps")?;
        let s = out.entry(name).or_default();
        for (v, t) in values.iter().zip(stamps) {
            s.values.push(v.as_f64().context("value")?);
            s.timestamps_ns
                .push(t.as_i64().context("timestamp")? * 1_000_000);
        }
    }
    for s in out.values_mut() {
        let mut pairs: Vec<(i64, f64)> = s
            .timestamps_ns
            .iter()
            .copied()
            .zip(s.values.iter().copied())
            .collect();
        pairs.sort_by_key(|p| p.0);
        s.timestamps_ns = pairs.iter().map(|p| p.0).collect();
        s.values = pairs.iter().map(|p| p.1).collect();
    }
    Ok(out)
}
