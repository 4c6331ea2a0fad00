//! The history stores for the history tests: the InfluxDB 1.x `scripts/test.sh` starts
//! (`DTOP_TEST_INFLUX_V1_URL`), a database of each test's own, the rig's raw samples read back
//! with a plain `SELECT`; VictoriaMetrics (`DTOP_TEST_VM_URL`), raw samples read back with
//! `/api/v1/export`; and their min/max per bucket computed here by the documented bucket rule
//! (`server/src/live/history.rs`) — apart from the server's grouping in either store, which is
//! what is checked against it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::services_required;

/// The URL in `var` (`DTOP_TEST_INFLUX_V1_URL`, `DTOP_TEST_VM_URL`); `None` (the test skips)
/// when unset, unless services are required.
pub fn url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                !services_required(),
                "DTOP_REQUIRE_SERVICES=1 but {var} is unset (scripts/test.sh starts the stores)"
            );
            eprintln!("skipped: {var} unset (scripts/test.sh starts the stores)");
            None
        }
    }
}

/// The shared VictoriaMetrics.
pub struct Victoria {
    pub url: String,
    client: reqwest::Client,
}

impl Victoria {
    /// The VictoriaMetrics of `DTOP_TEST_VM_URL`; `None` when there is none.
    pub fn shared() -> Option<Self> {
        Some(Self {
            url: url("DTOP_TEST_VM_URL")?,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        })
    }

    /// The twin's `[storage.influx_v2]` table for it (VictoriaMetrics takes the v2 write API;
    /// it ignores org, bucket and token). `dir` holds the token file.
    pub fn storage_toml(&self, dir: &std::path::Path) -> String {
        let token = dir.join("vm.token");
        std::fs::write(&token, "unused\n").unwrap();
        format!(
            "[storage.influx_v2]\nurl = {:?}\norg = \"dtop\"\nbucket = \"dtop\"\ntoken_file = {:?}\n",
            self.url,
            token.display().to_string()
        )
    }

    /// The server's `[live.history]` for it.
    pub fn history_config(&self) -> dtop_server::config::HistoryConfig {
        dtop_server::config::HistoryConfig::victoria_metrics(&self.url)
    }

    /// Writes line protocol (ms timestamps) through its InfluxDB write API.
    pub async fn write_lines(&self, lines: &str) {
        let r = self
            .client
            .post(format!("{}/write?precision=ms", self.url))
            .body(lines.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "write: {}", r.status());
    }

    /// Every raw stream-0 sample of `rig` in `[from_ms, to_ms)`, from `/api/v1/export` (several
    /// series of one channel are merged).
    pub async fn raw(&self, rig: &str, from_ms: i64, to_ms: i64) -> Raw {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.url),
            &[
                (
                    "match[]",
                    format!("{{__name__=~\"dtop_samples_.*\",rig=\"{rig}\",stream=\"0\"}}"),
                ),
                ("start", (from_ms.div_euclid(1000) - 1).to_string()),
                ("end", (to_ms.div_euclid(1000) + 1).to_string()),
            ],
        )
        .unwrap();
        let text = self
            .client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut raw = Raw::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap();
            let name = v["metric"]["__name__"].as_str().unwrap();
            let channel = name.strip_prefix("dtop_samples_").unwrap().to_owned();
            let points = raw.entry(channel).or_default();
            for (value, t) in v["values"]
                .as_array()
                .unwrap()
                .iter()
                .zip(v["timestamps"].as_array().unwrap())
            {
                let t_ms = t.as_i64().unwrap();
                if (from_ms..to_ms).contains(&t_ms) {
                    points.push((t_ms * 1_000_000, value.as_f64().unwrap()));
                }
            }
        }
        raw.retain(|_, points| !points.is_empty());
        for points in raw.values_mut() {
            points.sort_by_key(|p| p.0);
        }
        raw
    }

    /// Times (ms) of the rig's first and newest stored samples of its first channel over the
    /// last two minutes, once there are any.
    pub async fn stored_span_ms(&self, rig: &str) -> Option<(i64, i64)> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let raw = self.raw(rig, now_ms - 120_000, now_ms + 1).await;
        let points = raw.values().next()?;
        Some((points.first()?.0 / 1_000_000, points.last()?.0 / 1_000_000))
    }
}

/// One test's database on the shared InfluxDB.
pub struct Influx {
    pub url: String,
    pub database: String,
    client: reqwest::Client,
}

/// Raw samples of one range: per field, `(time ns, value)` in time order.
pub type Raw = BTreeMap<String, Vec<(i64, f64)>>;

/// Per channel: min and max per bucket (`None`: no sample there).
pub type Envelopes = BTreeMap<String, (Vec<Option<f64>>, Vec<Option<f64>>)>;

/// Min and max per bucket, as the history endpoint should answer them.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub bucket_ms: i64,
    pub t_ms: Vec<i64>,
    pub channels: Envelopes,
}

impl Influx {
    /// A fresh database named after `test` on the shared InfluxDB; `None` when there is none.
    pub async fn create(test: &str) -> Option<Self> {
        let url = url("DTOP_TEST_INFLUX_V1_URL")?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let influx = Self {
            url,
            database: format!("dtop_{test}_{}_{nanos}", std::process::id()),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let r = influx
            .client
            .post(format!("{}/query", influx.url))
            .form(&[("q", format!("CREATE DATABASE \"{}\"", influx.database))])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "CREATE DATABASE: {}", r.status());
        Some(influx)
    }

    /// The twin's `[storage.influx_v1]` table for this database.
    pub fn storage_toml(&self) -> String {
        format!(
            "[storage.influx_v1]\nurl = {:?}\ndatabase = {:?}\n",
            self.url, self.database
        )
    }

    /// The server's `[live.history]` for this database.
    pub fn history_config(&self) -> dtop_server::config::HistoryConfig {
        dtop_server::config::HistoryConfig::influx_v1(&self.url, &self.database)
    }

    /// Writes line protocol (ms timestamps) into this database.
    pub async fn write_lines(&self, lines: &str) {
        let r = self
            .client
            .post(format!(
                "{}/write?db={}&precision=ms",
                self.url, self.database
            ))
            .body(lines.to_owned())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "write: {}", r.status());
    }

    /// The answer to an InfluxQL read, times in ns; panics on any error or a partial answer.
    pub async fn select(&self, q: &str) -> Value {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/query", self.url),
            &[("db", self.database.as_str()), ("epoch", "ns"), ("q", q)],
        )
        .unwrap();
        let r = self.client.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{q}: {}", r.status());
        let body: Value = r.json().await.unwrap();
        let result = &body["results"][0];
        assert!(result["error"].is_null(), "{q}: {body}");
        assert!(result["partial"].is_null(), "{q}: a partial answer");
        result.clone()
    }

    /// Times (ns) of the rig's first and newest stored stream-0 samples, once there are any.
    pub async fn stored_span_ns(&self, rig: &str) -> Option<(i64, i64)> {
        let mut ends = Vec::new();
        for order in ["ASC", "DESC"] {
            let r = self
                .select(&format!(
                    "SELECT * FROM \"dtop_samples\" WHERE \"rig\" = '{rig}' AND \"stream\" = '0' \
                     ORDER BY time {order} LIMIT 1"
                ))
                .await;
            ends.push(r["series"][0]["values"][0][0].as_i64()?);
        }
        Some((ends[0], ends[1]))
    }

    /// Every stored stream-0 sample of `rig` in `[from_ms, to_ms)`, read with a plain `SELECT`.
    pub async fn raw(&self, rig: &str, from_ms: i64, to_ms: i64) -> Raw {
        let r = self
            .select(&format!(
                "SELECT * FROM \"dtop_samples\" WHERE \"rig\" = '{rig}' AND \"stream\" = '0' \
                 AND time >= {from_ms}ms AND time < {to_ms}ms"
            ))
            .await;
        let mut raw = Raw::new();
        let Some(series) = r["series"].as_array() else {
            return raw;
        };
        for s in series {
            let columns: Vec<&str> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            for row in s["values"].as_array().unwrap() {
                let t_ns = row[0].as_i64().unwrap();
                for (i, name) in columns.iter().enumerate().skip(1) {
                    // Tags (rig, stream) are strings; the channels are the float fields.
                    if let Some(v) = row[i].as_f64() {
                        raw.entry((*name).to_owned()).or_default().push((t_ns, v));
                    }
                }
            }
        }
        raw
    }

    /// Drops the database.
    pub async fn drop_database(self) {
        let _ = self
            .client
            .post(format!("{}/query", self.url))
            .form(&[("q", format!("DROP DATABASE \"{}\"", self.database))])
            .send()
            .await;
    }
}

/// The bucket rule, written out apart from the server's: `bucket_ms = ceil(span / px)`,
/// `ceil(span / bucket_ms)` buckets from `from_ms`, a sample at `t` in bucket
/// `floor((t − from) / bucket_ms)`; a bucket without samples is `None`.
pub fn bucket(raw: &Raw, from_ms: i64, to_ms: i64, px: u32) -> Expected {
    let span_ms = to_ms - from_ms;
    let bucket_ms = (span_ms + i64::from(px) - 1) / i64::from(px);
    let n = usize::try_from((span_ms + bucket_ms - 1) / bucket_ms).unwrap();
    let mut channels = BTreeMap::new();
    for (name, points) in raw {
        let mut min = vec![None::<f64>; n];
        let mut max = vec![None::<f64>; n];
        for &(t_ns, v) in points {
            let since_ns = t_ns - from_ms * 1_000_000;
            assert!(
                since_ns >= 0 && t_ns < to_ms * 1_000_000,
                "raw sample out of range"
            );
            let k = usize::try_from(since_ns / (bucket_ms * 1_000_000)).unwrap();
            min[k] = Some(min[k].map_or(v, |m: f64| m.min(v)));
            max[k] = Some(max[k].map_or(v, |m: f64| m.max(v)));
        }
        channels.insert(name.clone(), (min, max));
    }
    Expected {
        bucket_ms,
        t_ms: (0..n).map(|k| from_ms + bucket_ms * k as i64).collect(),
        channels,
    }
}

/// Checks the history endpoint's JSON against `expected`, bucket by bucket, bit for bit.
pub fn assert_json_equals(answer: &Value, expected: &Expected) {
    assert_eq!(answer["bucket_ms"].as_i64(), Some(expected.bucket_ms));
    let t_ms: Vec<i64> = serde_json::from_value(answer["t_ms"].clone()).unwrap();
    assert_eq!(t_ms, expected.t_ms, "bucket starts");
    let got: Envelopes = answer["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                (
                    serde_json::from_value(c["min"].clone()).unwrap(),
                    serde_json::from_value(c["max"].clone()).unwrap(),
                ),
            )
        })
        .collect();
    assert_same(&got, expected);
}

/// Checks the history CSV against `expected`: header `time_ms,{c}_min,{c}_max...`, one row per
/// bucket, empty cells where a bucket holds no sample.
pub fn assert_csv_equals(csv: &str, expected: &Expected) {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "time_ms");
    let names: Vec<String> = header[1..]
        .chunks(2)
        .map(|pair| {
            let name = pair[0].strip_suffix("_min").unwrap();
            assert_eq!(pair[1], format!("{name}_max"), "{header:?}");
            name.to_owned()
        })
        .collect();
    let mut got: Envelopes = names
        .iter()
        .map(|n| (n.clone(), (Vec::new(), Vec::new())))
        .collect();
    let mut t_ms = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        t_ms.push(cells[0].parse::<i64>().unwrap());
        let cell = |s: &str| (!s.is_empty()).then(|| s.parse::<f64>().unwrap());
        for (i, name) in names.iter().enumerate() {
            let entry = got.get_mut(name).unwrap();
            entry.0.push(cell(cells[1 + 2 * i]));
            entry.1.push(cell(cells[2 + 2 * i]));
        }
    }
    assert_eq!(t_ms, expected.t_ms, "CSV bucket starts");
    assert_same(&got, expected);
}

fn assert_same(got: &Envelopes, expected: &Expected) {
    // Every channel InfluxDB holds is answered; one it holds nothing of in the range is all gaps.
    for name in expected.channels.keys() {
        assert!(got.contains_key(name), "channel {name} missing");
    }
    for (name, (min, max)) in got {
        let empty = (
            vec![None; expected.t_ms.len()],
            vec![None; expected.t_ms.len()],
        );
        let (want_min, want_max) = expected.channels.get(name).unwrap_or(&empty);
        for k in 0..expected.t_ms.len() {
            assert_eq!(
                (min[k], max[k]),
                (want_min[k], want_max[k]),
                "{name}, bucket {k} at {} ms",
                expected.t_ms[k]
            );
        }
        assert_eq!(min.len(), expected.t_ms.len(), "{name}");
        assert_eq!(max.len(), expected.t_ms.len(), "{name}");
    }
}
