//! Owns the rig routes of the API.
//! - `POST /api/v1/rigs/{rig}/commands`: a user's request becomes the same `Command` the CLI
//!   sends (`dtop_proto::command::build`), issued by the user, published on the rig's cmd topic
//!   only if the user's own rules allow that topic, and a DVF gain above the limit the rig's
//!   twin published is refused before anything is sent (none published: refused too). The
//!   answer is 202 with the command id; the rig's acknowledgement reaches the browser on the
//!   rig's WebSocket.
//! - `GET /api/v1/rigs/{rig}/limits`: that limit.
//! - `GET /api/v1/rigs/{rig}/history[.csv]`: min and max per pixel bucket over a past range
//!   (`crate::live::history` reads the store), for users who may see the rig's samples.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtop_proto::RigId;
use dtop_proto::command::{self, CommandEnvelope, CommandRequest};
use dtop_studies::FieldProblem;
use serde::Serialize;
use tracing::info;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, AuthUser, Shared, live, rig_id};
use crate::live::history::{History, HistoryAnswer, HistoryError, Range, to_csv};
use crate::live::parameters::{self, ParametersAnswer, ParametersQuery};
use crate::live::record::RecordSource;
use crate::live::rig::LimitUnknown;
use crate::live::{GainLimit, Live, rights};

/// A command waits this long to be applied before the rig refuses it as expired.
pub const DEADLINE_S: f64 = 10.0;

/// The answer to an accepted command.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The command's id; its acknowledgement on the WebSocket carries it.
    pub command_id: String,
    /// The rig.
    pub rig: String,
    /// Who issued it.
    pub issued_by: String,
}

fn new_command_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(e.to_string()))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("web-{hex}"))
}

/// `dtop_proto::command::CommandRequest`: what to ask a rig, tagged by `kind`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = CommandRequest)]
pub struct CommandRequestDoc {
    /// `set_control`, `actuator_enable`, `actuator_disable`, `set_drive`, `safety_stop`,
    /// `safety_reset`, `rebirth`, `set_acquisition`, `excitation`, `run_cbc` or `stop_cbc`.
    pub kind: String,
    /// set_control: `off`, `dvf` or `lqg`.
    pub law: Option<String>,
    /// set_control with dvf: feedback gain, N·s/m (at most the rig's limit).
    pub gain_n_s_per_m: Option<f64>,
    /// set_control: `twin` (default) or `edge`.
    pub placement: Option<String>,
    /// set_drive: force, N.
    pub force_n: Option<f64>,
    /// set_acquisition: samples per block.
    pub block_samples: Option<u32>,
    /// excitation: `off`, `noise`, `sine` or `chirp`.
    pub waveform: Option<String>,
    /// excitation: N.
    pub amplitude_n: Option<f64>,
    /// excitation: Hz.
    pub frequency_hz: Option<f64>,
    /// excitation: Hz. run_cbc: the last forcing frequency, Hz.
    pub frequency_end_hz: Option<f64>,
    /// run_cbc: the first forcing frequency, Hz.
    pub frequency_start_hz: Option<f64>,
    /// run_cbc: evenly spaced frequencies, first and last included.
    pub frequency_steps: Option<u32>,
    /// run_cbc: first-harmonic amplitude of the actuator floor's displacement target, m.
    /// Optional overrides of the twin's defaults: `harmonics`, `proportional_gain_n_per_m`,
    /// `derivative_gain_n_s_per_m`, `integrator_corner_hz`, `settle_s`, `measure_periods`,
    /// `max_iterations`, `invasiveness_tolerance`, `change_tolerance`. The run's status and
    /// points are on `dtop/v1/twin/{rig}/cbc` and in `dtop_twin_cbc`.
    pub target_amplitude_m: Option<f64>,
}

/// The DVF gain limit the rig's twin published, or 409 saying why there is none to apply
/// (no twin status yet, or the twin accepts no DVF gain on this rig).
async fn twin_limit(live: &Live, rig: &RigId) -> Result<GainLimit, ApiError> {
    match live.hub.gain_limit(rig.clone()).await {
        Some(Ok(limit)) => Ok(limit),
        Some(Err(LimitUnknown::NoTwinStatus)) | None => Err(ApiError::Conflict(format!(
            "the twin has not published rig {rig}'s status yet, so its DVF gain limit is \
             unknown; no gain is sent without it"
        ))),
        Some(Err(LimitUnknown::Refused(why))) => Err(ApiError::Conflict(format!(
            "the twin accepts no DVF gain on rig {rig}: {why}"
        ))),
    }
}

/// Sends a command to a rig as the logged-in user; the acknowledgement arrives on
/// `/ws/rigs/{rig}`.
#[utoipa::path(post, path = "/api/v1/rigs/{rig}/commands", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id")),
    request_body = CommandRequestDoc,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn send(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiJson(request): ApiJson<CommandRequest>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live(&state)?;
    let rig = rig_id(&rig)?;
    let who = &user.0;
    if !rights(&live.acl, who, &rig).command {
        return Err(ApiError::ForbiddenBecause(format!(
            "{} (role {}) may not command rig {rig}: the role's rules do not allow publishing \
             on its cmd topic.",
            who.username, who.role
        )));
    }
    if let Some(gain) = request.dvf_gain_n_s_per_m() {
        let limit = twin_limit(live, &rig).await?;
        if gain > limit.max_gain_n_s_per_m {
            return Err(ApiError::Invalid(vec![FieldProblem::new(
                "gain_n_s_per_m",
                format!(
                    "{gain:.3} N·s/m exceeds the limit of {:.3} N·s/m ({} of the critical gain \
                     {:.3} N·s/m of floor {}, as the twin computes it)",
                    limit.max_gain_n_s_per_m,
                    limit.max_fraction_of_critical,
                    limit.critical_gain_n_s_per_m,
                    limit.floor
                ),
            )]));
        }
    }
    let id = new_command_id()?;
    let envelope = CommandEnvelope {
        rig: rig.as_str(),
        id: &id,
        deadline_s: DEADLINE_S,
        issued_by: &who.username,
        now_unix_ns: crate::live::hub::now_unix_ns(),
    };
    let built = command::build(&request, &envelope).map_err(|problems| {
        ApiError::Invalid(
            problems
                .into_iter()
                .map(|p| FieldProblem::new(p.field, p.message))
                .collect(),
        )
    })?;
    live.hub
        .publish(&rig, &built)
        .map_err(|e| ApiError::NotConfigured(format!("The command was not sent: {e}.")))?;
    info!(user = %who.username, rig = %rig, command_id = %id, kind = ?request, "Command sent.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            command_id: id,
            rig: rig.to_string(),
            issued_by: who.username.clone(),
        }),
    ))
}

/// The DVF gain limit of a rig's actuator as its twin published it, for the command panel.
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/limits", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id")),
    responses((status = 200, body = GainLimit), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn limits(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
) -> Result<Json<GainLimit>, ApiError> {
    let live = live(&state)?;
    let rig = rig_id(&rig)?;
    may_see_samples(live, &user.0, &rig)?;
    twin_limit(live, &rig).await.map(Json)
}

/// Refuses `who` unless their rules let them see `rig`'s samples (history, records and
/// parameters are the rig's data as much as its live feed).
fn may_see_samples(live: &Live, who: &dtop_auth::Identity, rig: &RigId) -> Result<(), ApiError> {
    if rights(&live.acl, who, rig).samples {
        Ok(())
    } else {
        Err(ApiError::ForbiddenBecause(format!(
            "{} may not see rig {rig}.",
            who.username
        )))
    }
}

/// The store the twin writes, as this server reads it.
fn history_store(live: &Live) -> Result<&History, ApiError> {
    live.history.as_ref().ok_or_else(|| {
        ApiError::NotConfigured(
            "History, records and parameters are read from the InfluxDB or VictoriaMetrics the \
             twin stores to: this server has no [live.history] (the twin may be storing to \
             files, as `dtop up` does by default)."
                .into(),
        )
    })
}

fn store_error(why: HistoryError) -> ApiError {
    ApiError::StoreUnavailable(format!("The history store did not answer: {why}"))
}

async fn answer(
    state: &Shared,
    user: &AuthUser,
    rig: &str,
    range: Range,
) -> Result<HistoryAnswer, ApiError> {
    let live = live(state)?;
    let rig = rig_id(rig)?;
    may_see_samples(live, &user.0, &rig)?;
    let history = history_store(live)?;
    let problems = range.problems(history.max_range_ms());
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let birth = live.hub.birth(rig.clone()).await.ok_or_else(|| {
        ApiError::Conflict(format!(
            "rig {rig} has not announced its channels (no birth)"
        ))
    })?;
    let channels: Vec<String> = birth
        .channels
        .iter()
        .filter(|c| c.stream_id == 0)
        .map(|c| c.name.clone())
        .collect();
    history
        .query(rig.as_str(), &channels, &range)
        .await
        .map_err(store_error)
}

/// The raw samples of a rig's stored range, as a study input: the user must be allowed to see
/// the rig's samples, as for its history.
///
/// # Errors
/// `Invalid` (a bad range, nothing stored, a channel the rig does not have), `Forbidden`,
/// `NotConfigured` (no history store), `StoreUnavailable`.
pub async fn record_input(
    state: &Shared,
    who: &dtop_auth::Identity,
    source: &RecordSource,
) -> Result<dtop_studies::NamedArray, ApiError> {
    let mut problems = source.problems();
    let rig = match rig_id(&source.rig) {
        Ok(rig) => Some(rig),
        Err(_) => {
            problems.push(FieldProblem::new(
                "record.rig",
                format!("{:?} is not a rig id", source.rig),
            ));
            None
        }
    };
    let (Some(rig), true) = (rig, problems.is_empty()) else {
        return Err(ApiError::Invalid(problems));
    };
    let live = live(state)?;
    may_see_samples(live, who, &rig)?;
    let history = history_store(live)?;
    let announced: Vec<String> = match live.hub.birth(rig.clone()).await {
        Some(birth) => birth
            .channels
            .iter()
            .filter(|c| c.stream_id == 0)
            .map(|c| c.name.clone())
            .collect(),
        None => Vec::new(),
    };
    let channels = if source.channels.is_empty() {
        if announced.is_empty() {
            return Err(ApiError::Conflict(format!(
                "rig {rig} has not announced its channels (no birth): name them in record.channels"
            )));
        }
        announced
    } else {
        let unknown: Vec<FieldProblem> = source
            .channels
            .iter()
            .enumerate()
            .filter(|(_, c)| !announced.is_empty() && !announced.contains(c))
            .map(|(i, c)| {
                FieldProblem::new(
                    format!("record.channels[{i}]"),
                    format!(
                        "rig {rig} has no channel {c:?}; it has {}",
                        announced.join(", ")
                    ),
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid(unknown));
        }
        source.channels.clone()
    };
    history
        .record(
            &source.input,
            rig.as_str(),
            &channels,
            source.from_ms,
            source.to_ms,
        )
        .await
        .map_err(|why| match why {
            HistoryError::Record(reason) => ApiError::invalid("record", reason),
            other => store_error(other),
        })
}

async fn parameters_answer(
    state: &Shared,
    user: &AuthUser,
    rig: &str,
    query: ParametersQuery,
) -> Result<ParametersAnswer, ApiError> {
    let live = live(state)?;
    let rig = rig_id(rig)?;
    may_see_samples(live, &user.0, &rig)?;
    let problems = query.problems();
    if !problems.is_empty() {
        return Err(ApiError::Invalid(problems));
    }
    let history = history_store(live)?;
    history
        .parameters(rig.as_str(), query.record, query.from_ms, query.to_ms)
        .await
        .map_err(|why| match why {
            HistoryError::Record(reason) => ApiError::invalid("to_ms", reason),
            other => store_error(other),
        })
}

/// A rig's parameter history over a range: each window's modes the twin's drift tracking
/// identified (`record=modes`), the storey stiffnesses fitted to them (`record=stiffness`) or
/// its drift alarms (`record=drift`).
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/parameters", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), ParametersQuery),
    responses((status = 200, body = ParametersAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "No history store configured, or it did not answer in time")),
    security(("bearer" = [])))]
pub async fn parameters_json(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(query): ApiQuery<ParametersQuery>,
) -> Result<Json<ParametersAnswer>, ApiError> {
    parameters_answer(&state, &user, &rig, query)
        .await
        .map(Json)
}

/// The same as `parameters`, as CSV (`time_ms`, `mode`, then every field).
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/parameters.csv", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), ParametersQuery),
    responses((status = 200, content_type = "text/csv", description = "The rows as CSV"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn parameters_csv(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(query): ApiQuery<ParametersQuery>,
) -> Result<Response, ApiError> {
    let a = parameters_answer(&state, &user, &rig, query).await?;
    let name = format!(
        "attachment; filename=\"{}-{}-{}-{}.csv\"",
        a.rig,
        query.record.measurement(),
        query.from_ms,
        query.to_ms
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        parameters::to_csv(&a),
    )
        .into_response())
}

/// Min and max per pixel bucket of every stream-0 channel over a range, from InfluxDB.
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/history", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), Range),
    responses((status = 200, body = HistoryAnswer), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "No InfluxDB configured, or it did not answer in time")),
    security(("bearer" = [])))]
pub async fn history_json(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Json<HistoryAnswer>, ApiError> {
    answer(&state, &user, &rig, range).await.map(Json)
}

/// The same as `history`, as CSV (`time_ms`, then `{channel}_min,{channel}_max`).
#[utoipa::path(get, path = "/api/v1/rigs/{rig}/history.csv", tag = "rigs",
    params(("rig" = String, Path, description = "Rig id"), Range),
    responses((status = 200, content_type = "text/csv", description = "The envelope as CSV"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history_csv(
    State(state): State<Shared>,
    user: AuthUser,
    Path(rig): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Response, ApiError> {
    let a = answer(&state, &user, &rig, range).await?;
    let name = format!(
        "attachment; filename=\"{}-{}-{}.csv\"",
        a.rig, range.from_ms, range.to_ms
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        to_csv(&a),
    )
        .into_response())
}
