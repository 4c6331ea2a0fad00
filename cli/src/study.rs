//! `dtop study submit | watch | list | show | cancel | result`: the command-line shape of these
//! subcommands and what they print. Requests go through [`crate::client`]; the table and the
//! CSV layout are pure functions here.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{ApiClient, ClientError, ConnectionArgs, path_segment};
use crate::params::{self, ModelArg};

/// `dtop study ...`.
#[derive(Debug, Clone, Args)]
pub struct StudyArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: StudyCommand,
}

/// The `dtop study` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StudyCommand {
    /// Submit a study; prints its record as JSON (or its id with --quiet).
    Submit(SubmitArgs),
    /// Follow a study until it ends: a progress bar on a terminal, JSON lines otherwise.
    /// Exit 0 if it succeeded, 1 if it failed or was cancelled.
    Watch(WatchArgs),
    /// List studies, newest first: a table on a terminal, JSON otherwise.
    List(ListArgs),
    /// Print one study's record as JSON.
    Show {
        /// Study id.
        id: String,
    },
    /// Cancel a study; prints its record as JSON.
    Cancel {
        /// Study id.
        id: String,
    },
    /// Download a succeeded study's result.
    Result(ResultArgs),
}

/// Options of `dtop study submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// Study kind: modal, frf, control, simulate, uncertainty or design.
    pub kind: String,
    /// The model: a catalogue `name` (latest version), `name@version`, or a ModelSpec file
    /// (JSON or TOML) sent inline.
    #[arg(long)]
    pub model: String,
    /// One parameter, `key=value`; keys may be dotted (`frequencies.f_max_hz=200`), values are
    /// JSON when they parse as JSON, else strings. Overrides --params. Repeatable.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub param: Vec<String>,
    /// The parameters as a JSON or TOML file (an object).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// A measured table the kind takes, `NAME=FILE`: a CSV (header of column names, then
    /// numbers), a JSON table, or a measured FRF in Cristallo's text formats
    /// (`frf=southampton.txt`). Repeatable.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub input: Vec<String>,
    /// A rig's stored range the server reads as the `acceleration` input,
    /// `RIG:FROM_MS:TO_MS` (ms since the Unix epoch), e.g. for `oma` on live data.
    #[arg(long, value_name = "RIG:FROM_MS:TO_MS")]
    pub record: Option<String>,
    /// Take `params.targets` from the `modes` of a succeeded study's summary (an `oma` or `ema`
    /// study), e.g. `dtop study submit update --model southampton --targets-from st_…`.
    #[arg(long, value_name = "STUDY_ID")]
    pub targets_from: Option<String>,
    /// Seed of the study's random streams (default: drawn by the server).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Then follow it as `dtop study watch` does (and exit as it does).
    #[arg(long)]
    pub watch: bool,
    /// Print only the study id.
    #[arg(long)]
    pub quiet: bool,
    /// With --watch: give up after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub timeout_s: f64,
}

/// Options of `dtop study watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Study id.
    pub id: String,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub timeout_s: f64,
}

/// Options of `dtop study list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only studies on this catalogue model name (any version).
    #[arg(long)]
    pub model: Option<String>,
    /// Only studies submitted by this user.
    #[arg(long = "submitted-by", alias = "by")]
    pub submitted_by: Option<String>,
    /// Only studies in this state (queued, running, reducing, succeeded, failed, cancelled).
    #[arg(long)]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<u32>,
}

/// Result formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultFormat {
    /// `{"study", "summary", "arrays": [NamedArray...]}`.
    Json,
    /// The named array as CSV; without --array every array, each under a `# name` line and
    /// separated by a blank line.
    Csv,
}

/// Options of `dtop study result`.
#[derive(Debug, Clone, Args)]
pub struct ResultArgs {
    /// Study id.
    pub id: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: ResultFormat,
    /// Only this array.
    #[arg(long)]
    pub array: Option<String>,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs a `dtop study` command; the exit status on success.
///
/// # Errors
/// Every way it can fail, each with its exit status.
pub fn run(args: &StudyArgs) -> Result<u8, ClientError> {
    match &args.command {
        StudyCommand::Submit(submit_args) => {
            let mut body = submit_body(submit_args)?;
            let api = ApiClient::login(&args.connection)?;
            if let Some(study) = &submit_args.targets_from {
                let result = api.get(&format!("studies/{}/result", path_segment(study)), &[])?;
                body["params"]["targets"] = targets_of(study, &result)?;
            }
            let record = api.post("studies", &body)?;
            if submit_args.quiet {
                println!("{}", record["id"].as_str().unwrap_or_default());
            } else {
                print_json(&record);
            }
            if submit_args.watch {
                let id = record["id"].as_str().unwrap_or_default().to_owned();
                return watch(&api, &id, timeout(submit_args.timeout_s)?);
            }
            Ok(0)
        }
        StudyCommand::Watch(w) => {
            let limit = timeout(w.timeout_s)?;
            let api = ApiClient::login(&args.connection)?;
            watch(&api, &w.id, limit)
        }
        StudyCommand::List(list) => {
            let api = ApiClient::login(&args.connection)?;
            let mut query = Vec::new();
            for (key, value) in [
                ("kind", &list.kind),
                ("model", &list.model),
                ("submitted_by", &list.submitted_by),
                ("state", &list.state),
            ] {
                if let Some(v) = value {
                    query.push((key, v.clone()));
                }
            }
            if let Some(limit) = list.limit {
                query.push(("limit", limit.to_string()));
            }
            let records = api.get("studies", &query)?;
            if std::io::stdout().is_terminal() {
                print!(
                    "{}",
                    study_table(records.as_array().map_or(&[], Vec::as_slice))
                );
            } else {
                print_json(&records);
            }
            Ok(0)
        }
        StudyCommand::Show { id } => {
            let api = ApiClient::login(&args.connection)?;
            print_json(&api.get(&format!("studies/{}", path_segment(id)), &[])?);
            Ok(0)
        }
        StudyCommand::Cancel { id } => {
            let api = ApiClient::login(&args.connection)?;
            let record = api.post(&format!("studies/{}/cancel", path_segment(id)), &json!({}))?;
            print_json(&record);
            Ok(0)
        }
        StudyCommand::Result(result_args) => {
            let api = ApiClient::login(&args.connection)?;
            let text = result_text(&api, result_args)?;
            match &result_args.out {
                Some(path) => std::fs::write(path, text).map_err(|e| {
                    ClientError::Failed(format!("cannot write {}: {e}", path.display()))
                })?,
                None => print!("{text}"),
            }
            Ok(0)
        }
    }
}

/// The `modes` of a study result's summary, as an `update` study's targets; the modes an `oma`
/// study could not confirm (`unconfirmed_modes`) are never among them.
fn targets_of(study: &str, result: &Value) -> Result<Value, ClientError> {
    match result["summary"]["modes"].as_array() {
        Some(modes) if !modes.is_empty() => Ok(Value::Array(modes.clone())),
        _ => Err(ClientError::Failed(format!(
            "study {study}'s result has no identified modes (summary.modes): give targets with \
             --param targets=… instead"
        ))),
    }
}

fn timeout(seconds: f64) -> Result<Duration, ClientError> {
    if seconds.is_finite() && seconds > 0.0 && seconds <= 1e7 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(ClientError::Usage(vec![format!(
            "--timeout-s must be in (0, 1e7], got {seconds}"
        )]))
    }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// The POST /api/v1/studies body for `args`; every problem of the options at once.
///
/// # Errors
/// `Usage` with every problem.
pub fn submit_body(args: &SubmitArgs) -> Result<Value, ClientError> {
    let mut problems = Vec::new();
    if !dtop_studies::StudyKind::ALL
        .iter()
        .any(|k| k.as_str() == args.kind)
    {
        let kinds: Vec<&str> = dtop_studies::StudyKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        problems.push(format!(
            "kind {:?} is not one of {}",
            args.kind,
            kinds.join(", ")
        ));
    }
    let model = match ModelArg::parse(&args.model) {
        Ok(ModelArg::Catalogue(r)) => Some(Value::String(r.to_string())),
        Ok(ModelArg::File(path)) => match params::read_model_spec(&path) {
            Ok(spec) => serde_json::to_value(spec).ok(),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        },
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let file = match &args.params {
        Some(path) => match params::read_document(path) {
            Ok(v) => Some(v),
            Err(p) => {
                problems.push(format!("--params: {p}"));
                None
            }
        },
        None => None,
    };
    let params = params::build_params(file, &args.param).unwrap_or_else(|mut p| {
        problems.append(&mut p);
        Value::Null
    });
    let mut inputs = Vec::new();
    for arg in &args.input {
        match crate::inputs::read_input(arg) {
            Ok(table) => inputs.push(table),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let record = match args.record.as_deref().map(crate::inputs::record) {
        Some(Ok(r)) => Some(r),
        Some(Err(p)) => {
            problems.push(p);
            None
        }
        None => None,
    };
    if !problems.is_empty() {
        return Err(ClientError::Usage(problems));
    }
    let mut body = json!({"kind": args.kind, "model": model, "params": params});
    if let Some(seed) = args.seed {
        body["seed"] = json!(seed);
    }
    if !inputs.is_empty() {
        body["inputs"] = json!(inputs);
    }
    if let Some(record) = record {
        body["record"] = record;
    }
    Ok(body)
}

/// Whether a record's state is final, and whether it succeeded.
fn final_state(record: &Value) -> Option<bool> {
    match record["state"].as_str() {
        Some("succeeded") => Some(true),
        Some("failed" | "cancelled") => Some(false),
        _ => None,
    }
}

/// Follows study `id` until it ends or `limit` passes; 0 if it succeeded, 1 otherwise.
fn watch(api: &ApiClient, id: &str, limit: Duration) -> Result<u8, ClientError> {
    let path = format!("studies/{}/events", path_segment(id));
    let started = Instant::now();
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} chunks  {msg} ({elapsed})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(id.to_owned());
        bar
    });
    let mut last: Option<Value> = None;
    // The stream ends after a final state; if it ends before (server restart, proxy timeout),
    // look at the record and reconnect, within `limit`. Bounded by the deadline.
    loop {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            if let Some(bar) = &bar {
                bar.abandon_with_message("gave up waiting");
            }
            return Err(ClientError::Failed(format!(
                "study {id} did not end within {} s",
                limit.as_secs_f64()
            )));
        }
        let streamed = api.stream(&path, left, |event| {
            if event.event != "study" {
                return Ok(true);
            }
            let record: Value = serde_json::from_str(&event.data)
                .map_err(|e| ClientError::Failed(format!("cannot read a study event: {e}")))?;
            show_progress(bar.as_ref(), &record);
            let done = final_state(&record).is_some();
            last = Some(record);
            Ok(!done)
        });
        match streamed {
            Ok(()) => {}
            // A timed-out or broken stream is retried until the deadline; refusals are final.
            Err(ClientError::Failed(_) | ClientError::Unreachable { .. }) => {
                std::thread::sleep(Duration::from_millis(500).min(left));
            }
            Err(e) => return Err(e),
        }
        if let Some(record) = &last
            && let Some(ok) = final_state(record)
        {
            if let Some(bar) = &bar {
                bar.finish();
            }
            if !ok {
                eprintln!(
                    "study {id} {}: {}",
                    record["state"].as_str().unwrap_or_default(),
                    record["error"].as_str().unwrap_or("no reason given")
                );
            }
            return Ok(if ok { 0 } else { 1 });
        }
    }
}

fn show_progress(bar: Option<&indicatif::ProgressBar>, record: &Value) {
    match bar {
        Some(bar) => {
            bar.set_length(record["chunks_total"].as_u64().unwrap_or(0));
            bar.set_position(record["chunks_done"].as_u64().unwrap_or(0));
            bar.set_message(record["state"].as_str().unwrap_or("?").to_owned());
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe only stops the output; the exit status still tells the outcome.
            let _ = writeln!(out, "{record}");
            let _ = out.flush();
        }
    }
}

/// The text `dtop study result` prints.
fn result_text(api: &ApiClient, args: &ResultArgs) -> Result<String, ClientError> {
    let id = path_segment(&args.id);
    let result = api.get(&format!("studies/{id}/result"), &[])?;
    let names: Vec<String> = match &args.array {
        Some(name) => vec![name.clone()],
        None => result["arrays"]
            .as_array()
            .map(|arrays| {
                arrays
                    .iter()
                    .filter_map(|a| a["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    match args.format {
        ResultFormat::Json => {
            let mut arrays = Vec::new();
            for name in &names {
                arrays.push(api.get(
                    &format!("studies/{id}/arrays/{}", path_segment(name)),
                    &[("format", "json".to_owned())],
                )?);
            }
            let mut out =
                json!({"study": result["study"], "summary": result["summary"], "arrays": arrays});
            // The model version the study proposed (`update`, `fea`), for `dtop model approve`.
            if let Some(proposed) = result["proposed_model"].as_str() {
                out["proposed_model"] = json!(proposed);
            }
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
            ))
        }
        ResultFormat::Csv => {
            let mut tables = Vec::new();
            for name in &names {
                let csv = api.get_text(
                    &format!("studies/{id}/arrays/{}", path_segment(name)),
                    &[("format", "csv".to_owned())],
                )?;
                tables.push((name.clone(), csv));
            }
            Ok(join_csv(&tables, args.array.is_some()))
        }
    }
}

/// One table as it is; several each under a `# name` line, separated by a blank line.
pub fn join_csv(tables: &[(String, String)], single: bool) -> String {
    if single && let [(_, csv)] = tables {
        return with_newline(csv);
    }
    tables
        .iter()
        .map(|(name, csv)| format!("# {name}\n{}", with_newline(csv)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') || text.is_empty() {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// The `dtop study list` table on a terminal.
pub fn study_table(records: &[Value]) -> String {
    let header = ["ID", "KIND", "MODEL", "STATE", "CHUNKS", "BY", "SUBMITTED"];
    let rows: Vec<[String; 7]> = records
        .iter()
        .map(|r| {
            let text = |key: &str| r[key].as_str().unwrap_or("-").to_owned();
            [
                text("id"),
                text("kind"),
                r["model_ref"].as_str().unwrap_or("(inline)").to_owned(),
                text("state"),
                format!(
                    "{}/{}",
                    r["chunks_done"].as_u64().unwrap_or(0),
                    r["chunks_total"].as_u64().unwrap_or(0)
                ),
                text("submitted_by"),
                text("submitted_at"),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn submit_args(kind: &str, model: &str, param: &[&str]) -> SubmitArgs {
        SubmitArgs {
            kind: kind.into(),
            model: model.into(),
            param: param.iter().map(|s| (*s).to_owned()).collect(),
            params: None,
            input: Vec::new(),
            record: None,
            targets_from: None,
            seed: Some(7),
            watch: false,
            quiet: false,
            timeout_s: 10.0,
        }
    }

    #[test]
    fn a_submit_body_carries_kind_model_params_and_seed() {
        let body = submit_body(&submit_args("modal", "southampton@1", &["a.b=2"])).unwrap();
        assert_eq!(
            body,
            json!({"kind": "modal", "model": "southampton@1", "params": {"a": {"b": 2}}, "seed": 7})
        );
    }

    #[test]
    fn an_inline_model_file_is_sent_as_its_spec() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        let spec = dtop_studies::model::builtin_models().remove(0).1;
        std::fs::write(&path, serde_json::to_string(&spec).unwrap()).unwrap();
        let body = submit_body(&submit_args("modal", path.to_str().unwrap(), &[])).unwrap();
        assert_eq!(body["model"], serde_json::to_value(&spec).unwrap());
    }

    #[test]
    fn a_submit_reports_kind_model_and_param_problems_at_once() {
        match submit_body(&submit_args("nope", "Bad Name", &["x"])) {
            Err(ClientError::Usage(problems)) => assert_eq!(problems.len(), 3, "{problems:#?}"),
            other => panic!("expected usage problems, got {other:?}"),
        }
    }

    #[test]
    fn several_arrays_join_under_name_lines_and_one_stays_bare() {
        let tables = vec![
            ("modes".to_owned(), "f_hz\n1\n".to_owned()),
            ("shapes".to_owned(), "a,b\n1,2".to_owned()),
        ];
        assert_eq!(
            join_csv(&tables, false),
            "# modes\nf_hz\n1\n\n# shapes\na,b\n1,2\n"
        );
        assert_eq!(join_csv(&tables[..1], true), "f_hz\n1\n");
    }

    #[test]
    fn the_table_aligns_columns_and_names_inline_models() {
        let records = vec![json!({"id": "st_1", "kind": "modal", "model_ref": null,
            "state": "running", "chunks_done": 1, "chunks_total": 4,
            "submitted_by": "admin", "submitted_at": "2026-01-01T00:00:00Z"})];
        let table = study_table(&records);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[1].contains("(inline)") && lines[1].contains("1/4"),
            "{table}"
        );
        assert_eq!(lines[0].find("KIND"), lines[1].find("modal"));
    }
}
