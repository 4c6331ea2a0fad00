//! Reading back from InfluxDB 1.x: one InfluxQL `GET /query` over reqwest, its JSON reply
//! turned into rows. Used by the audit and by replay; owns its HTTP clients (one per storage
//! node, read from the first that answers) and knows nothing about what the rows mean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::Url;
use serde_json::Value;

use crate::config::{InfluxV1Config, Secret, SecretError, StorageConfig, parse_base_url};

/// Longest server error message kept, characters.
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Why a query failed; one variant per reaction.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The storage configured cannot be queried this way.
    #[error("{0}")]
    Unsupported(String),
    #[error("bad InfluxDB URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// No answer (connection refused, timeout): the server may come back.
    #[error("InfluxDB did not answer: {0}")]
    Http(#[from] reqwest::Error),
    /// An answer other than 200.
    #[error("InfluxDB answered {status}: {message}")]
    Status { status: u16, message: String },
    /// A 200 whose body is not what InfluxDB sends, or a statement error.
    #[error("InfluxDB reply: {0}")]
    Reply(String),
}

/// One row of a reply: `time` (ns since the Unix epoch), then the selected fields and tags.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Column names, shared by every row of a series.
    pub columns: Arc<[String]>,
    pub values: Vec<Value>,
    /// The series' `GROUP BY` tags, if any.
    pub tags: Arc<BTreeMap<String, String>>,
}

impl Row {
    /// The value of column `name`; `None` when absent or null.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| self.values.get(i))
            .filter(|v| !v.is_null())
    }

    /// The row's time, ns since the Unix epoch (queries ask for `epoch=ns`).
    pub fn time_ns(&self) -> Option<i64> {
        self.get("time").and_then(Value::as_i64)
    }
}

/// An InfluxDB 1.x database to read from; with several storage nodes, each node's, read from
/// the first that answers.
#[derive(Debug, Clone)]
pub struct InfluxQuery {
    /// At least one.
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last: tried first next time.
    preferred: Arc<AtomicUsize>,
}

/// One node's `/query`.
#[derive(Debug, Clone)]
struct Endpoint {
    /// The node's name, for messages.
    node: String,
    client: reqwest::Client,
    query_url: Url,
    database: String,
    username: Option<String>,
    password: Option<Secret>,
}

impl InfluxQuery {
    /// The database `config` writes to, with its credentials.
    pub fn influx_v1(config: &InfluxV1Config, timeout: Duration) -> Result<Self, QueryError> {
        Ok(Self {
            endpoints: vec![Endpoint::influx_v1("influx_v1", config, timeout)?],
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The storage nodes' databases (their InfluxDB 1.x ones; the others cannot be read
    /// back), or only node `only`'s.
    pub fn from_storage_nodes(
        storage: &StorageConfig,
        only: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, QueryError> {
        let nodes = storage.nodes();
        if let Some(name) = only
            && !nodes.iter().any(|n| n.name == name)
        {
            let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(QueryError::Unsupported(format!(
                "no storage node is named {name:?}; the nodes are {}",
                names.join(", ")
            )));
        }
        let mut endpoints = Vec::new();
        for n in nodes.iter().filter(|n| only.is_none_or(|o| o == n.name)) {
            if let StorageConfig::InfluxV1(c) = &n.storage {
                endpoints.push(Endpoint::influx_v1(&n.name, c, timeout)?);
            }
        }
        if endpoints.is_empty() {
            return Err(QueryError::Unsupported(format!(
                "reading stored data back needs InfluxDB 1.x's /query API; this twin stores to {}",
                storage.describe()
            )));
        }
        Ok(Self {
            endpoints,
            preferred: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl Endpoint {
    fn influx_v1(
        node: &str,
        config: &InfluxV1Config,
        timeout: Duration,
    ) -> Result<Self, QueryError> {
        let base = parse_base_url(&config.url).map_err(|why| QueryError::BadUrl {
            url: config.url.clone(),
            why,
        })?;
        let mut query_url = base.clone();
        query_url.set_path(&format!("{}/query", base.path().trim_end_matches('/')));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()?;
        Ok(Self {
            node: node.to_owned(),
            client,
            query_url,
            database: config.database.clone(),
            username: config.username.clone(),
            password: config
                .password_file
                .as_deref()
                .map(Secret::read_file)
                .transpose()?,
        })
    }
}

impl InfluxQuery {
    /// The database of a twin's storage configuration (every node's, with a node list); only
    /// InfluxDB 1.x can be read back.
    pub fn from_storage(storage: &StorageConfig, timeout: Duration) -> Result<Self, QueryError> {
        Self::from_storage_nodes(storage, None, timeout)
    }

    /// Runs one InfluxQL statement and returns every row of every series, in reply order.
    /// With several nodes: on the node that answered last, else the next one that answers
    /// (no answer, or a 5xx, moves on; any other reply is the answer).
    pub async fn rows(&self, statement: &str) -> Result<Vec<Row>, QueryError> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut last_error = None;
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &self.endpoints[i];
            match endpoint.rows(statement).await {
                Err(e @ (QueryError::Http(_) | QueryError::Status { status: 500.., .. })) => {
                    if n > 1 {
                        tracing::warn!(node = %endpoint.node, error = %e, "A storage node did not answer a query; trying the next.");
                    }
                    last_error = Some(e);
                }
                other => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| QueryError::Reply("no storage node to query".into())))
    }
}

impl Endpoint {
    async fn rows(&self, statement: &str) -> Result<Vec<Row>, QueryError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut()
            .append_pair("db", &self.database)
            .append_pair("q", statement)
            .append_pair("epoch", "ns");
        let mut request = self.client.get(url);
        if let Some(user) = &self.username {
            request = request.basic_auth(user, self.password.as_ref().map(Secret::expose));
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            let message: String = String::from_utf8_lossy(&body)
                .trim()
                .chars()
                .take(MAX_ERROR_MESSAGE_BYTES)
                .collect();
            return Err(QueryError::Status {
                status: status.as_u16(),
                message,
            });
        }
        parse_reply(&body)
    }
}

/// The rows of an InfluxDB 1.x JSON reply to one statement.
pub fn parse_reply(body: &[u8]) -> Result<Vec<Row>, QueryError> {
    let reply: Value =
        serde_json::from_slice(body).map_err(|e| QueryError::Reply(e.to_string()))?;
    if let Some(e) = reply.get("error") {
        return Err(QueryError::Reply(e.to_string()));
    }
    let result = reply
        .get("results")
        .and_then(|r| r.get(0))
        .ok_or_else(|| QueryError::Reply("no results".into()))?;
    if let Some(e) = result.get("error") {
        return Err(QueryError::Reply(e.to_string()));
    }
    let mut rows = Vec::new();
    for series in result
        .get("series")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let columns: Arc<[String]> = series
            .get("columns")
            .and_then(Value::as_array)
            .ok_or_else(|| QueryError::Reply("a series without columns".into()))?
            .iter()
            .map(|c| c.as_str().unwrap_or_default().to_owned())
            .collect();
        let tags: Arc<BTreeMap<String, String>> = Arc::new(
            series
                .get("tags")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        );
        for values in series
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let values = values
                .as_array()
                .ok_or_else(|| QueryError::Reply("a row that is not an array".into()))?
                .clone();
            rows.push(Row {
                columns: Arc::clone(&columns),
                values,
                tags: Arc::clone(&tags),
            });
        }
    }
    Ok(rows)
}

/// Quotes a tag value or string for an InfluxQL `WHERE` clause.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_rows_of_every_series_with_their_tags() {
        let body = br#"{"results":[{"statement_id":0,"series":[
            {"name":"m","tags":{"rig":"a"},"columns":["time","x","s"],"values":[[1,0.1,"q"],[2,null,"r"]]},
            {"name":"m","tags":{"rig":"b"},"columns":["time","x","s"],"values":[[3,2.5,"t"]]}]}]}"#;
        let rows = parse_reply(body).expect("a valid reply");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].time_ns(), Some(1));
        assert_eq!(rows[0].get("x").and_then(Value::as_f64), Some(0.1));
        assert_eq!(rows[1].get("x"), None, "null is absent");
        assert_eq!(rows[2].tags.get("rig").map(String::as_str), Some("b"));
    }

    #[test]
    fn an_empty_result_is_no_rows_and_a_statement_error_is_an_error() {
        assert!(
            parse_reply(br#"{"results":[{"statement_id":0}]}"#)
                .expect("valid")
                .is_empty()
        );
        let err = parse_reply(br#"{"results":[{"statement_id":0,"error":"bad"}]}"#);
        assert!(matches!(err, Err(QueryError::Reply(m)) if m.contains("bad")));
    }

    #[test]
    fn floats_parse_back_exactly() {
        // Shortest round-trip decimals, as InfluxDB sends them; a 1-ulp parse error would make
        // replay fail (serde_json's `float_roundtrip`).
        let values: [f64; 5] = [6.90841192535, 0.1, 1e-300, 123_456.789_012_345_67, -2.5e-8];
        let body = format!(
            r#"{{"results":[{{"series":[{{"columns":["time","v"],"values":[{}]}}]}}]}}"#,
            values
                .iter()
                .map(|v| format!("[0,{v:?}]"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let rows = parse_reply(body.as_bytes()).expect("valid");
        for (row, v) in rows.iter().zip(values) {
            let parsed = row.get("v").and_then(Value::as_f64).expect("a number");
            assert_eq!(parsed.to_bits(), v.to_bits(), "{v:?} parsed as {parsed:?}");
        }
    }

    #[test]
    fn quotes_escape_quotes_and_backslashes() {
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
    }
}
