//! The browser pages: server-rendered HTML (askama templates in `server/templates/`, checked at
//! compile time) over the same engine calls as the API, with small TypeScript bundles
//! (`server/web/`, built by `build.rs`) for plots and live progress. Sessions are the API's,
//! carried in an HttpOnly cookie; every state-changing request carries the session's CSRF
//! token; every response carries the security headers.
//!
//! # Layout
//! - [`cookie`]: the session cookie, CSRF comparison and `?next=` checks (pure).
//! - [`page`]: [`page::PageUser`], the layout's data, rendering, and HTML error pages.
//! - [`assets`]: the embedded bundles, hashed URLs, caching and gzip.
//! - [`login`]: login and logout.
//! - [`rigs`]: the rigs overview and one rig live (data and rules in `crate::live`).
//! - [`studies`]: the study list, the submit forms and the study page.
//! - [`models`]: the catalogue, one model, one version, and the comparison.
//! - [`form`]: turning a kind's default parameters into form fields and back.

pub mod assets;
pub mod cookie;
pub mod form;
pub mod login;
pub mod models;
pub mod page;
pub mod rigs;
pub mod studies;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::extract::Shared;
use crate::web::page::{PageError, PageUser, see_other};

/// Only our own origin, no inline script or style, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The page routes (the API's are in [`crate::http`]).
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/assets/{file}", get(assets::serve))
        .route("/rigs", get(rigs::list))
        .route("/rigs/{rig}", get(rigs::show))
        .route("/studies", get(studies::list))
        .route(
            "/studies/new/{kind}",
            get(studies::new_form).post(studies::submit),
        )
        .route("/studies/{id}", get(studies::show))
        .route("/studies/{id}/cancel", post(studies::cancel))
        .route("/studies/{id}/download.json", get(studies::download_json))
        .route("/studies/{id}/download.csv", get(studies::download_csv))
        .route("/models", get(models::list))
        .route("/models/compare", get(models::compare))
        .route("/models/new", get(models::new_form).post(models::add))
        .route("/models/{name}", get(models::versions))
        .route("/models/{name}/{version}", get(models::version))
        .route("/models/{name}/{version}/review", post(models::review))
}

/// `GET /`: the rigs overview, so `dtop up`'s printed URL shows the rig moving.
async fn home(_user: PageUser) -> Response {
    see_other("/rigs")
}

/// The HTML 404 for anything that is neither a page nor an API route.
pub async fn not_found() -> Response {
    PageError::NotFound(None, "There is no page at this address.".to_owned()).into_response()
}

/// Adds the security headers to every response (pages, API, assets, metrics).
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    response
}
