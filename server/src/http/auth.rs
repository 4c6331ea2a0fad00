//! Owns login, logout and whoami: the password check (throttled per user name and client
//! address, argon2 off the async threads), token issue and revocation. Never logs a password
//! or a token.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use dtop_auth::{Identity, RigScope, Secret};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{error, info};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, AuthUser, ClientAddr, Shared, bearer};

/// A login request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// User name in the credentials file.
    pub username: String,
    /// The password.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A password as it arrives: never printed.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A successful login.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token (random 256-bit, base64url): send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Who logged in.
    pub username: String,
    /// Their role.
    pub role: String,
    /// Their rig scope: `["*"]` for all.
    pub rigs: Vec<String>,
    /// When the token stops working, RFC 3339 UTC.
    pub expires_at: String,
}

/// Who the token belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// User name.
    pub username: String,
    /// Role.
    pub role: String,
    /// Rig scope: `["*"]` for all.
    pub rigs: Vec<String>,
}

fn rigs(identity: &Identity) -> Vec<String> {
    match &identity.rigs {
        RigScope::All => vec!["*".to_owned()],
        RigScope::Only(rigs) => rigs.clone(),
    }
}

/// Logs in with a user name and password from the credentials file.
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "Too many failed logins; see Retry-After"),
    ))]
pub async fn login(
    State(state): State<Shared>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Json<LoginResponse>, ApiError> {
    let (identity, token) =
        authenticate(&state, &body.username, Secret::new(body.password.0), addr).await?;
    let expires_at = (OffsetDateTime::now_utc() + state.sessions.lifetime())
        .format(&Rfc3339)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(LoginResponse {
        token: token.expose().clone(),
        username: identity.username.clone(),
        role: identity.role.to_string(),
        rigs: rigs(&identity),
        expires_at,
    }))
}

/// The one password check behind the API's and the browser's login: throttled per user name
/// and client address, argon2 off the async threads; a new session token on success.
///
/// # Errors
/// [`ApiError::TooManyRequests`] while throttled, [`ApiError::Unauthenticated`] for a wrong
/// name or password, [`ApiError::Internal`] when no token can be made.
pub async fn authenticate(
    state: &Shared,
    username: &str,
    password: Secret<String>,
    addr: Option<std::net::IpAddr>,
) -> Result<(Identity, Secret<String>), ApiError> {
    if let Some(wait) = state.throttle.wait(username, addr) {
        state
            .metrics
            .logins_throttled
            .fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::TooManyRequests(wait));
    }
    let Some(identity) = state.users.verify(username, password).await else {
        state.throttle.failed(username, addr);
        state.metrics.logins_failed.fetch_add(1, Ordering::Relaxed);
        info!(user = %username, client = ?addr, "Login failed.");
        return Err(ApiError::Unauthenticated("Wrong user name or password."));
    };
    state.throttle.succeeded(username, addr);
    let token = state.sessions.issue(&identity.username).map_err(|e| {
        error!(error = %e, "Cannot make a login token.");
        ApiError::Internal(e.to_string())
    })?;
    info!(user = %identity.username, role = %identity.role, "Logged in.");
    Ok((identity, token))
}

/// Revokes the token of this request.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logout(
    State(state): State<Shared>,
    user: AuthUser,
    parts: Parts,
) -> Result<StatusCode, ApiError> {
    if let Some(token) = bearer(&parts)
        .or_else(|| crate::web::cookie::read(&parts.headers, crate::web::cookie::SESSION_COOKIE))
    {
        state.sessions.revoke(token);
    }
    info!(user = %user.0.username, "Logged out.");
    Ok(StatusCode::NO_CONTENT)
}

/// The identity behind the token.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "auth",
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn whoami(user: AuthUser) -> Json<WhoAmI> {
    Json(WhoAmI {
        username: user.0.username.clone(),
        role: user.0.role.to_string(),
        rigs: rigs(&user.0),
    })
}
