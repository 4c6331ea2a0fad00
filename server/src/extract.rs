//! Owns what handlers take from a request besides the path: the shared state, the
//! authenticated user ([`AuthUser`], by bearer token or by the browser's session cookie with
//! its CSRF token on state-changing requests), the client address, and JSON bodies whose every
//! refusal (too large, malformed, unknown field) speaks the API's error format with where it
//! failed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use dtop_auth::{Action, Identity};
use dtop_engine::Engine;
use dtop_proto::RigId;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::events::Changes;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::throttle::Throttle;
use crate::users::Users;
use crate::web::cookie;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The studies engine.
    pub engine: Engine,
    /// The credentials file.
    pub users: Users,
    /// Live tokens.
    pub sessions: Sessions,
    /// Failed-login slow-down.
    pub throttle: Throttle,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Study changes, from the one shared poller.
    pub changes: Changes,
    /// Server shutdown: ends SSE streams.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Live rigs (absent without `[mqtt]`).
    pub live: Option<Arc<crate::live::Live>>,
    /// Whether the server speaks TLS itself: cookies are then marked `Secure`.
    pub tls: bool,
}

/// The state as handlers get it.
pub type Shared = Arc<AppState>;

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The authenticated user of a request: a live token whose user is still in the credentials
/// file (removing a user or changing their role takes effect at once).
#[derive(Debug, Clone)]
pub struct AuthUser(pub Identity);

impl AuthUser {
    /// Refuses with 403 unless the user's role allows `action`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`].
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if dtop_auth::allowed(&self.0, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<Shared> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let username = if let Some(token) = bearer(parts) {
            state.sessions.user(token).ok_or(ApiError::Unauthenticated(
                "The token is unknown or expired.",
            ))?
        } else if let Some(token) = cookie::read(&parts.headers, cookie::SESSION_COOKIE) {
            let session = state.sessions.info(token).ok_or(ApiError::Unauthenticated(
                "The session is unknown or expired; log in again.",
            ))?;
            // A cookie rides along with any request the browser makes, so a state-changing one
            // must also prove it comes from one of our pages. Bearer tokens are never sent
            // implicitly and need no such proof.
            if !parts.method.is_safe() {
                let given = parts
                    .headers
                    .get(cookie::CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !cookie::csrf_matches(&session.csrf, given) {
                    return Err(ApiError::CsrfRefused);
                }
            }
            session.username
        } else {
            return Err(ApiError::Unauthenticated(
                "Log in and send the token as `Authorization: Bearer <token>`.",
            ));
        };
        let identity = state
            .users
            .identity(&username)
            .ok_or(ApiError::Unauthenticated("The user no longer exists."))?;
        Ok(Self(identity))
    }
}

/// The client's IP address, when the server knows it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let plain = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let tls = || {
            parts
                .extensions
                .get::<ConnectInfo<crate::tls::TlsPeer>>()
                .map(|c| c.0.0.ip())
        };
        Ok(Self(plain.or_else(tls)))
    }
}

/// A JSON body, refused in the API's words.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::invalid("body", "The request body could not be read.")
            }
        })?;
        parse_json(&bytes).map(Self)
    }
}

/// A query string deserialized into `T`; a malformed or unknown parameter is the API's 400 with
/// the problem under `query`, not axum's plain-text rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Self(q.0))
            .map_err(|rejection| ApiError::invalid("query", rejection.body_text()))
    }
}

/// Parses a JSON body, saying where it failed (`$.params.n_samples` or line and column).
///
/// # Errors
/// [`ApiError::Invalid`] with one problem at the failing path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::invalid(field, inner.to_string())
    })
}

/// The live routes' state, or 503 saying what is missing.
pub fn live(state: &Shared) -> Result<&Arc<Live>, ApiError> {
    state.live.as_ref().ok_or_else(|| {
        ApiError::NotConfigured(
            "Live rigs are not configured on this server: give it an [mqtt] section.".into(),
        )
    })
}

/// A rig id from the path, or 404.
pub fn rig_id(rig: &str) -> Result<RigId, ApiError> {
    RigId::new(rig).map_err(|e| ApiError::NotFound(format!("rig {rig:?} ({e})")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    fn problem(text: &str) -> (String, String) {
        match parse_json::<Body>(text.as_bytes()).unwrap_err() {
            ApiError::Invalid(p) => (p[0].field.clone(), p[0].message.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_json_says_where() {
        let (field, message) = problem("{\"name\": \"a\",\n \"inner\": {\"n\": }}");
        assert_eq!(field, "inner.n");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn unknown_fields_and_wrong_types_name_their_path() {
        let (field, message) = problem(r#"{"name":"a","inner":{"n":1,"x":2}}"#);
        assert!(field.starts_with("inner"), "{field}");
        assert!(message.contains("unknown field `x`"), "{message}");
        assert_eq!(problem(r#"{"name":"a","inner":{"n":-1}}"#).0, "inner.n");
        assert_eq!(problem("[]").0, "body");
    }

    #[test]
    fn reads_the_bearer_token_case_insensitively() {
        let req = axum::http::Request::builder()
            .header(AUTHORIZATION, "bearer abc")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(bearer(&parts), Some("abc"));
        let req = axum::http::Request::builder()
            .header(AUTHORIZATION, "Basic abc")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        assert_eq!(bearer(&parts), None);
    }

    #[tokio::test]
    async fn a_bad_query_string_is_the_apis_400_naming_the_query() {
        let (mut parts, ()) = axum::http::Request::builder()
            .uri("/x?n=abc")
            .body(())
            .unwrap()
            .into_parts();
        match ApiQuery::<Inner>::from_request_parts(&mut parts, &()).await {
            Err(ApiError::Invalid(p)) => {
                assert_eq!(p[0].field, "query");
                assert!(p[0].message.contains("n"), "{}", p[0].message);
            }
            other => panic!("{other:?}"),
        }
        let (mut parts, ()) = axum::http::Request::builder()
            .uri("/x?n=7")
            .body(())
            .unwrap()
            .into_parts();
        let ApiQuery(inner) = ApiQuery::<Inner>::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert_eq!(inner.n, 7);
    }
}
