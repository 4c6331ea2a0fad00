//! Owns the run-time command socket (`--control PATH`): a Unix stream socket taking one
//! command per line and answering each with one line. Parsing is a pure function; the
//! firmware task applies the change (so it lands between two samples) and logs it. Knows
//! nothing about the pty or Modbus.
//!
//! Commands:
//! - `damage storey=<1..=3> [stiffness_factor=<f>] [damping_factor=<f>] [ramp_s=<s>] [at_s=<s>]`:
//!   a `[[damage]]` change made now (or at `at_s` of simulated time, if later). Answer
//!   `ok from_sample_index=<n> at_s=<s>`, or `error: <every problem>`.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::DamageConfig;
use crate::error::SimError;
use crate::sim::Event;

/// Longest command line accepted, bytes; a longer one is answered with an error.
pub const MAX_LINE_BYTES: usize = 1024;

/// Parses one command line into the change it asks for.
///
/// # Errors
/// What is wrong with the line, with the expected form.
pub fn parse_command(line: &str) -> Result<DamageConfig, String> {
    const USAGE: &str = "expected: damage storey=N [stiffness_factor=F] [damping_factor=F] \
                         [ramp_s=S] [at_s=S]";
    let mut words = line.split_whitespace();
    match words.next() {
        Some("damage") => {}
        Some(other) => return Err(format!("unknown command {other:?}; {USAGE}")),
        None => return Err(format!("empty command; {USAGE}")),
    }
    let mut storey = None;
    let mut change = DamageConfig {
        storey: 0,
        stiffness_factor: 1.0,
        damping_factor: 1.0,
        at_s: 0.0,
        ramp_s: 0.0,
    };
    let mut problems = Vec::new();
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            problems.push(format!("{word:?} is not key=value"));
            continue;
        };
        let number = value.parse::<f64>();
        let slot = match key {
            "storey" => {
                match value.parse::<usize>() {
                    Ok(n) => storey = Some(n),
                    Err(_) => problems.push(format!("storey={value} is not a storey number")),
                }
                continue;
            }
            "stiffness_factor" => &mut change.stiffness_factor,
            "damping_factor" => &mut change.damping_factor,
            "ramp_s" => &mut change.ramp_s,
            "at_s" => &mut change.at_s,
            _ => {
                problems.push(format!("unknown key {key:?}"));
                continue;
            }
        };
        match number {
            Ok(v) => *slot = v,
            Err(_) => problems.push(format!("{key}={value} is not a number")),
        }
    }
    match storey {
        Some(n) => change.storey = n,
        None => problems.push("storey=N is missing".to_owned()),
    }
    if problems.is_empty() {
        Ok(change)
    } else {
        Err(format!("{}; {USAGE}", problems.join("; ")))
    }
}

/// Binds the command socket at `path`, replacing a stale socket file left by an earlier run
/// (any other kind of file there is an error).
pub fn bind(path: &Path) -> Result<UnixListener, SimError> {
    use std::os::unix::fs::FileTypeExt as _;
    let err = |source| SimError::Control {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    UnixListener::bind(path).map_err(err)
}

/// Serves the command socket until `stop`: each connection's lines go to the firmware task
/// as [`Event::Damage`], each answered with one line. Removes the socket file at the end.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    events_tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<(), SimError> {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, events_tx.clone(), stop.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "Accepting a control connection failed."),
            },
        }
    }
    // Best effort: a leftover socket file is replaced at the next start anyway.
    let _ = std::fs::remove_file(&path);
    Ok(())
}

async fn serve_connection(
    stream: UnixStream,
    events_tx: mpsc::Sender<Event>,
    stop: CancellationToken,
) {
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    loop {
        let line = tokio::select! {
            () = stop.cancelled() => return,
            line = lines.next_line() => match line {
                Ok(Some(line)) => line,
                // Closed, or not UTF-8: the client gets no more answers.
                Ok(None) | Err(_) => return,
            },
        };
        let answer = if line.len() > MAX_LINE_BYTES {
            format!("error: line longer than {MAX_LINE_BYTES} bytes")
        } else {
            match parse_command(&line) {
                Err(problem) => format!("error: {problem}"),
                Ok(change) => apply(change, &events_tx).await,
            }
        };
        if writer
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn apply(change: DamageConfig, events_tx: &mpsc::Sender<Event>) -> String {
    let (reply_tx, reply_rx) = oneshot::channel();
    if events_tx
        .send(Event::Damage { change, reply_tx })
        .await
        .is_err()
    {
        return "error: the simulator is stopping".to_owned();
    }
    match reply_rx.await {
        Ok(Ok(applied)) => format!(
            "ok from_sample_index={} at_s={}",
            applied.from_sample_index, applied.change.at_s
        ),
        Ok(Err(problems)) => format!("error: {}", problems.join("; ")),
        Err(_) => "error: the simulator is stopping".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_damage_command_with_defaults_for_what_it_leaves_out() {
        assert_eq!(
            parse_command("damage storey=2 damping_factor=1.5 ramp_s=10").unwrap(),
            DamageConfig {
                storey: 2,
                stiffness_factor: 1.0,
                damping_factor: 1.5,
                at_s: 0.0,
                ramp_s: 10.0,
            }
        );
    }

    #[test]
    fn reports_every_problem_of_a_command_line_at_once() {
        let problem = parse_command("damage stiffness_factor=x foo=1 bare").unwrap_err();
        for needle in [
            "stiffness_factor=x",
            "unknown key \"foo\"",
            "\"bare\"",
            "storey=N is missing",
            "expected:",
        ] {
            assert!(problem.contains(needle), "{needle}: {problem}");
        }
        assert!(
            parse_command("repair storey=1")
                .unwrap_err()
                .contains("unknown command")
        );
        assert!(parse_command("").unwrap_err().contains("empty command"));
    }

    /// The socket shell end to end, with the firmware task played by the test: the command
    /// reaches it as an `Event::Damage`, and its answer comes back as one line.
    #[tokio::test]
    async fn a_command_line_on_the_socket_reaches_the_firmware_and_is_answered() {
        use crate::sim::AppliedChange;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        // A stale socket file from an earlier run is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let listener = bind(&path).unwrap();
        let (events_tx, mut events_rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, path.clone(), events_tx, stop.clone()));
        let firmware = tokio::spawn(async move {
            let Some(Event::Damage { change, reply_tx }) = events_rx.recv().await else {
                panic!("no damage event");
            };
            assert_eq!((change.storey, change.stiffness_factor), (2, 0.9));
            reply_tx
                .send(Ok(AppliedChange {
                    change: DamageConfig {
                        at_s: 1.5,
                        ..change
                    },
                    from_sample_index: 1500,
                }))
                .unwrap();
            let Some(Event::Damage { reply_tx, .. }) = events_rx.recv().await else {
                panic!("no second damage event");
            };
            reply_tx
                .send(Err(vec!["change.storey = 9 must be a storey 1..=3".into()]))
                .unwrap();
        });
        let stream = UnixStream::connect(&path).await.unwrap();
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        writer
            .write_all(b"damage storey=2 stiffness_factor=0.9\nnonsense\ndamage storey=9\n")
            .await
            .unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            "ok from_sample_index=1500 at_s=1.5"
        );
        assert!(
            lines
                .next_line()
                .await
                .unwrap()
                .unwrap()
                .starts_with("error: unknown command")
        );
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            "error: change.storey = 9 must be a storey 1..=3"
        );
        firmware.await.unwrap();
        stop.cancel();
        server.await.unwrap().unwrap();
        assert!(!path.exists(), "the socket file is removed at the end");
    }

    #[test]
    fn refuses_to_replace_a_file_that_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        std::fs::write(&path, "data").unwrap();
        assert!(matches!(bind(&path), Err(SimError::Control { .. })));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }
}
