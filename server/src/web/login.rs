//! Owns the browser's way in and out: the login page and form (the same credentials check,
//! throttling and session store as the API's login, a double-submit CSRF cookie of its own
//! since there is no session yet), the session cookie, and logout. Never logs a password or a
//! token, and never puts one in a URL.

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dtop_auth::Secret;
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{ClientAddr, Shared};
use crate::http::auth::authenticate;
use crate::sessions::random_base64url;
use crate::web::cookie::{self, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::web::page::{Chrome, PageError, PageUser, current_user, render, see_other};

/// How long the login form's CSRF cookie lives, in seconds.
const LOGIN_FORM_LIFETIME_S: u64 = 3600;
/// Where a login without a (safe) `next` lands.
pub const HOME: &str = "/";

/// The login page's template.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    next: String,
    username: String,
    error: Option<String>,
}

/// `?next=` of the login page.
#[derive(Debug, Deserialize)]
pub struct NextQuery {
    /// Where to go after logging in (a path on this site; anything else is ignored).
    #[serde(default)]
    pub next: Option<String>,
}

/// The login form (its `Debug` leaves the password out).
#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm")
            .field("username", &self.username)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

/// The logout form.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(rename = "_csrf", default)]
    pub csrf: String,
}

fn landing(next: Option<&str>) -> String {
    next.and_then(cookie::safe_next)
        .filter(|n| !n.starts_with("/login"))
        .unwrap_or(HOME)
        .to_owned()
}

/// Renders the login form with a fresh form token in its cookie.
fn login_form(
    state: &Shared,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Result<Response, PageError> {
    let csrf = random_base64url().map_err(|e| PageError::Internal(e.to_string()))?;
    let page = LoginPage {
        chrome: Chrome::anonymous(csrf.clone()),
        next,
        username,
        error,
    };
    let mut response = render(&page)?;
    *response.status_mut() = status;
    if let Some(value) = cookie::set(LOGIN_CSRF_COOKIE, &csrf, LOGIN_FORM_LIFETIME_S, state.tls) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}

/// `GET /login`: the form, or straight on when already logged in.
pub async fn page(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Result<Response, PageError> {
    let next = landing(query.next.as_deref());
    if current_user(&state, &headers).is_some() {
        return Ok(see_other(&next));
    }
    login_form(&state, StatusCode::OK, next, String::new(), None)
}

/// `POST /login`: checks the password like the API does, sets the session cookie and goes to
/// `next`.
pub async fn submit(
    State(state): State<Shared>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    let next = landing(Some(&form.next));
    let expected = cookie::read(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || !cookie::csrf_matches(expected, &form.csrf) {
        return login_form(
            &state,
            StatusCode::FORBIDDEN,
            next,
            form.username,
            Some("The login form expired; please log in again.".to_owned()),
        );
    }
    let (_, token) =
        match authenticate(&state, &form.username, Secret::new(form.password), addr).await {
            Ok(ok) => ok,
            Err(e @ (ApiError::Unauthenticated(_) | ApiError::TooManyRequests(_))) => {
                let status = e.status();
                let message = e.body().message;
                return login_form(&state, status, next, form.username, Some(message));
            }
            Err(e) => return Err(PageError::Api(None, e)),
        };
    let mut response = see_other(&next);
    let lifetime_s = state.sessions.lifetime().as_secs();
    let headers = response.headers_mut();
    if let Some(value) = cookie::set(SESSION_COOKIE, token.expose(), lifetime_s, state.tls) {
        headers.append(SET_COOKIE, value);
    }
    if let Some(value) = cookie::set(LOGIN_CSRF_COOKIE, "", 0, state.tls) {
        headers.append(SET_COOKIE, value);
    }
    Ok(response)
}

/// `POST /logout`: revokes the session (CSRF-checked) and clears the cookie.
pub async fn logout(
    State(state): State<Shared>,
    user: PageUser,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, PageError> {
    user.check_csrf(&form.csrf)?;
    if let Some(token) = cookie::read(&headers, SESSION_COOKIE) {
        state.sessions.revoke(token);
    }
    tracing::info!(user = %user.identity.username, "Logged out (browser).");
    let mut response = see_other("/login");
    if let Some(value) = cookie::set(SESSION_COOKIE, "", 0, state.tls) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response.into_response())
}
