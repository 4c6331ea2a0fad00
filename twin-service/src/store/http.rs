//! The HTTP sinks: InfluxDB 1.x `POST /write` and 2.x `POST /api/v2/write`, over reqwest.
//!
//! One request per batch, with a whole-request timeout; the reply is classified into retry or
//! reject by status code. Owns the HTTP client; knows nothing about batching or retries.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::{StoreError, WriteError};
use crate::config::{HttpConfig, InfluxV1Config, InfluxV2Config, Secret, parse_base_url};

/// Longest server error message kept for logs, bytes.
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

#[derive(Debug)]
enum Auth {
    None,
    Basic {
        username: String,
        password: Option<Secret>,
    },
    Token(Secret),
}

/// Writes batches to one InfluxDB-compatible write endpoint.
#[derive(Debug)]
pub struct HttpSink {
    client: reqwest::Client,
    write_url: Url,
    auth: Auth,
}

impl HttpSink {
    /// `POST {url}/write?db=..&precision=u|n`, with optional basic auth.
    pub fn influx_v1(config: &InfluxV1Config, http: &HttpConfig) -> Result<Self, StoreError> {
        let base = parse_base_url(&config.url).map_err(StoreError::BadUrl)?;
        let mut write_url = join_path(&base, "write");
        write_url
            .query_pairs_mut()
            .append_pair("db", &config.database)
            .append_pair("precision", config.precision.v1_param());
        let auth = match &config.username {
            Some(username) => Auth::Basic {
                username: username.clone(),
                password: config
                    .password_file
                    .as_deref()
                    .map(Secret::read_file)
                    .transpose()?,
            },
            None => Auth::None,
        };
        Self::new(write_url, auth, http)
    }

    /// `POST {url}/api/v2/write?org=..&bucket=..&precision=us|ns`, with `Authorization: Token`.
    pub fn influx_v2(config: &InfluxV2Config, http: &HttpConfig) -> Result<Self, StoreError> {
        let base = parse_base_url(&config.url).map_err(StoreError::BadUrl)?;
        let mut write_url = join_path(&base, "api/v2/write");
        write_url
            .query_pairs_mut()
            .append_pair("org", &config.org)
            .append_pair("bucket", &config.bucket)
            .append_pair("precision", config.precision.v2_param());
        let auth = Auth::Token(Secret::read_file(&config.token_file)?);
        Self::new(write_url, auth, http)
    }

    fn new(write_url: Url, auth: Auth, http: &HttpConfig) -> Result<Self, StoreError> {
        let client = reqwest::Client::builder()
            .timeout(http.timeout())
            .connect_timeout(http.timeout())
            .build()
            .map_err(StoreError::HttpClient)?;
        Ok(Self {
            client,
            write_url,
            auth,
        })
    }

    /// The full write URL (no credentials in it).
    pub fn write_url(&self) -> &Url {
        &self.write_url
    }

    pub async fn write(&self, body: &Bytes) -> Result<(), WriteError> {
        let mut request = self
            .client
            .post(self.write_url.clone())
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(body.clone());
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => {
                request.basic_auth(username, password.as_ref().map(Secret::expose))
            }
            Auth::Token(token) => {
                request.header(AUTHORIZATION, format!("Token {}", token.expose()))
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            // A request we could not even build will not build on a retry either.
            Err(e) if e.is_builder() => {
                return Err(WriteError::Rejected {
                    status: 0,
                    message: error_chain(&e),
                });
            }
            Err(e) => {
                return Err(WriteError::Retryable {
                    detail: error_chain(&e),
                    retry_after: None,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The body is only for the log; failing to read it must not change the verdict.
        let message = match response.bytes().await {
            Ok(b) => truncate_utf8(&b, MAX_ERROR_MESSAGE_BYTES),
            Err(e) => format!("(no body: {})", error_chain(&e)),
        };
        if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ) {
            Err(WriteError::NeedsOperator {
                status: status.as_u16(),
                message,
            })
        } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(WriteError::Retryable {
                detail: format!("HTTP {}: {message}", status.as_u16()),
                retry_after,
            })
        } else {
            Err(WriteError::Rejected {
                status: status.as_u16(),
                message,
            })
        }
    }
}

/// `base` with `suffix` appended to its path, keeping any prefix (`/influx/` + `write`).
fn join_path(base: &Url, suffix: &str) -> Url {
    let mut url = base.clone();
    let path = format!("{}/{suffix}", base.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

fn truncate_utf8(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The error and its sources, joined, so "error sending request" says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::lineproto::Precision;

    #[test]
    fn builds_v1_and_v2_write_urls_keeping_path_prefixes() {
        let http = HttpConfig::default();
        let v1 = HttpSink::influx_v1(
            &InfluxV1Config {
                url: "http://127.0.0.1:8086".into(),
                database: "dtop lab".into(),
                username: None,
                password_file: None,
                precision: Precision::Us,
            },
            &http,
        )
        .unwrap();
        assert_eq!(
            v1.write_url().as_str(),
            "http://127.0.0.1:8086/write?db=dtop+lab&precision=u"
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k\n").unwrap();
        let v2 = HttpSink::influx_v2(
            &InfluxV2Config {
                url: "https://db.example/influx/".into(),
                org: "o".into(),
                bucket: "b".into(),
                token_file: token,
                precision: Precision::Ns,
            },
            &http,
        )
        .unwrap();
        assert_eq!(
            v2.write_url().as_str(),
            "https://db.example/influx/api/v2/write?org=o&bucket=b&precision=ns"
        );
        assert!(!format!("{v2:?}").contains("t0k"));
    }

    #[test]
    fn truncates_long_messages_on_a_char_boundary() {
        assert_eq!(truncate_utf8(" short \n".as_bytes(), 10), "short");
        assert_eq!(truncate_utf8("ééé".as_bytes(), 3), "é...");
    }
}
