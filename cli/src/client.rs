//! Owns talking to the DTOP API server (`/work/agents/api.md`, served by `dtop-server`): the
//! connection options shared by `dtop study` and `dtop model`, the password (environment, file or
//! a prompt with echo off; never an argument, never logged), login, and mapping every HTTP
//! answer to an error with its exit status. Knows nothing about what the commands print.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use dtop_auth::Secret;

use crate::sse::{SseEvent, SseParser};

/// Exit status: the study failed or was cancelled, or the server refused the request.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the server could not be reached.
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit status: bad input (sysexits EX_USAGE), from the command line or a 400 from the server.
pub const EXIT_USAGE: u8 = 64;
/// Exit status: not logged in or not allowed (sysexits EX_NOPERM), for 401 and 403.
pub const EXIT_NOPERM: u8 = 77;

/// Time limit of every call but the event stream.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of connecting, for the event stream too.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach and log in to the API server.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// API server base URL.
    #[arg(
        long,
        env = "DTOP_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// User name to log in as.
    #[arg(long, env = "DTOP_USER", global = true)]
    pub user: Option<String>,
    /// File holding the password (first line). Otherwise the DTOP_PASSWORD environment
    /// variable, otherwise a prompt on the terminal. Never give it as an argument.
    #[arg(long, global = true)]
    pub password_file: Option<PathBuf>,
}

/// One field the server (or the command line) found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// Where, e.g. `params.frequencies.f_max_hz`.
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// Why a `dtop study`/`dtop model` command did not succeed; each maps to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad command-line input, every problem.
    #[error("{} problem(s) with the options:\n  - {}", .0.len(), .0.join("\n  - "))]
    Usage(Vec<String>),
    /// The server answered 400 with these problems.
    #[error("{message}{}", problems_text(.problems))]
    Invalid {
        /// The server's sentence.
        message: String,
        /// Every field problem.
        problems: Vec<Problem>,
    },
    /// 401 or 403.
    #[error("{status}: {message}")]
    NotPermitted {
        /// The status.
        status: StatusCode,
        /// The server's sentence.
        message: String,
    },
    /// No answer from the server.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Any other refusal (404, 409, 429, 5xx).
    #[error("{status} {code}: {message}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// The error code of the body, e.g. `not_found`.
        code: String,
        /// The server's sentence.
        message: String,
    },
    /// The study ended failed or cancelled, or an answer could not be understood or written.
    #[error("{0}")]
    Failed(String),
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("\n  {}: {}", p.field, p.message))
        .collect()
}

impl ClientError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Invalid { .. } => EXIT_USAGE,
            Self::NotPermitted { .. } => EXIT_NOPERM,
            Self::Unreachable { .. } => EXIT_UNREACHABLE,
            Self::Refused { .. } | Self::Failed(_) => EXIT_FAILED,
        }
    }
}

/// The error body of the API.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    problems: Vec<Problem>,
}

/// A logged-in connection to the API server.
#[derive(Debug)]
pub struct ApiClient {
    http: Client,
    /// Base URL without a trailing `/`.
    base: String,
    token: Secret<String>,
}

/// Reads the password: `--password-file`, else `DTOP_PASSWORD`, else a prompt on the terminal.
fn password(args: &ConnectionArgs, user: &str) -> Result<Secret<String>, ClientError> {
    if let Some(path) = &args.password_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ClientError::Usage(vec![format!("--password-file {}: {e}", path.display())])
        })?;
        return Ok(Secret::new(
            text.lines().next().unwrap_or_default().to_owned(),
        ));
    }
    if let Ok(p) = std::env::var("DTOP_PASSWORD") {
        return Ok(Secret::new(p));
    }
    prompt_password(&format!("Password for {user}: ")).map_err(|e| {
        ClientError::Usage(vec![format!(
            "no password: set DTOP_PASSWORD, give --password-file, or run on a terminal ({e})"
        )])
    })
}

/// Asks on the controlling terminal with echo off, and restores the terminal afterwards.
fn prompt_password(prompt: &str) -> std::io::Result<Secret<String>> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")?;
    let saved = tcgetattr(&tty).map_err(std::io::Error::from)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ECHONL);
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    tcsetattr(&tty, SetArg::TCSANOW, &silent).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let read = BufReader::new(&tty).read_line(&mut line);
    let restored = tcsetattr(&tty, SetArg::TCSANOW, &saved).map_err(std::io::Error::from);
    read?;
    restored?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n']).to_owned()))
}

fn unreachable(base: &str, e: &reqwest::Error) -> ClientError {
    // Walk the sources: reqwest's own Display hides the OS reason (connection refused...).
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    ClientError::Unreachable {
        url: base.to_owned(),
        reason,
    }
}

/// Turns a non-success answer into its error.
fn refusal(response: Response) -> ClientError {
    let status = response.status();
    let body: ErrorBody = response.json().unwrap_or_default();
    let message = if body.message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        body.message
    };
    match status {
        StatusCode::BAD_REQUEST => ClientError::Invalid {
            message,
            problems: body.problems,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            ClientError::NotPermitted { status, message }
        }
        _ => ClientError::Refused {
            status,
            code: body.error,
            message,
        },
    }
}

/// Joins `segment` to a URL path, percent-encoding what is not unreserved (RFC 3986 §2.3).
pub fn path_segment(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ApiClient {
    /// Logs in with the connection options.
    ///
    /// # Errors
    /// `Usage` without a user or password, `Unreachable`, `NotPermitted` for a refused login.
    pub fn login(args: &ConnectionArgs) -> Result<Self, ClientError> {
        let base = args.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(vec![format!(
                "--server {base:?} must start with http:// or https://"
            )]));
        }
        let Some(user) = args.user.clone() else {
            return Err(ClientError::Usage(vec![
                "no user: give --user NAME or set DTOP_USER".to_owned(),
            ]));
        };
        let password = password(args, &user)?;
        let http = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Failed(format!("cannot build the HTTP client: {e}")))?;
        let response = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"username": user, "password": password.expose()}))
            .send()
            .map_err(|e| unreachable(&base, &e))?;
        if !response.status().is_success() {
            return Err(refusal(response));
        }
        #[derive(Deserialize)]
        struct Login {
            token: String,
        }
        let login: Login = response
            .json()
            .map_err(|e| ClientError::Failed(format!("cannot read the login answer: {e}")))?;
        Ok(Self {
            http,
            base,
            token: Secret::new(login.token),
        })
    }

    fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request
            .bearer_auth(self.token.expose())
            .send()
            .map_err(|e| unreachable(&self.base, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refusal(response))
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/{path}", self.base)
    }

    /// GET `path` (below `/api/v1/`) with `query`, as JSON.
    ///
    /// # Errors
    /// Any refusal, or an answer that is not JSON.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let response = self.send(self.http.get(self.url(path)).query(query))?;
        response
            .json()
            .map_err(|e| ClientError::Failed(format!("cannot read the answer to GET {path}: {e}")))
    }

    /// GET `path` as text (e.g. CSV).
    ///
    /// # Errors
    /// Any refusal.
    pub fn get_text(&self, path: &str, query: &[(&str, String)]) -> Result<String, ClientError> {
        let response = self.send(self.http.get(self.url(path)).query(query))?;
        response
            .text()
            .map_err(|e| ClientError::Failed(format!("cannot read the answer to GET {path}: {e}")))
    }

    /// POST `body` to `path`, as JSON.
    ///
    /// # Errors
    /// Any refusal, or an answer that is not JSON.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self.send(self.http.post(self.url(path)).json(body))?;
        response
            .json()
            .map_err(|e| ClientError::Failed(format!("cannot read the answer to POST {path}: {e}")))
    }

    /// Follows the event stream at `path`, calling `on_event` for each event until it returns
    /// `false` or the stream ends. The whole stream is limited to `limit`.
    ///
    /// # Errors
    /// Any refusal, or the stream breaking.
    pub fn stream(
        &self,
        path: &str,
        limit: Duration,
        mut on_event: impl FnMut(SseEvent) -> Result<bool, ClientError>,
    ) -> Result<(), ClientError> {
        let response = self.send(
            self.http
                .get(self.url(path))
                .header("Accept", "text/event-stream")
                .timeout(limit),
        )?;
        let mut parser = SseParser::new();
        for line in BufReader::new(response).lines() {
            let line = line.map_err(|e| ClientError::Failed(format!("event stream broke: {e}")))?;
            if let Some(event) = parser.push_line(&line)
                && !on_event(event)?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_escape_what_would_change_the_path() {
        assert_eq!(path_segment("st_01-ab"), "st_01-ab");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn each_error_has_its_documented_exit_status() {
        assert_eq!(ClientError::Usage(vec![]).exit_code(), 64);
        let invalid = ClientError::Invalid {
            message: "m".into(),
            problems: vec![],
        };
        assert_eq!(invalid.exit_code(), 64);
        let forbidden = ClientError::NotPermitted {
            status: StatusCode::FORBIDDEN,
            message: "m".into(),
        };
        assert_eq!(forbidden.exit_code(), 77);
        let away = ClientError::Unreachable {
            url: "u".into(),
            reason: "r".into(),
        };
        assert_eq!(away.exit_code(), 2);
        assert_eq!(ClientError::Failed("x".into()).exit_code(), 1);
    }
}
