//! Owns the embedded browser bundles (built by `build.rs` from `server/web/`): their
//! content-hashed URLs for templates, and serving them with immutable caching and gzip when the
//! browser accepts it. Knows nothing about pages.

use axum::extract::Path;
use axum::http::header::{ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One bundle.
#[derive(Debug)]
pub struct Asset {
    /// Its name in `server/web/src` terms: `study.js`, `app.css`.
    pub name: &'static str,
    /// Where it is served: `/assets/study-0123456789abcdef.js`.
    pub url: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// The bundle.
    pub body: &'static [u8],
    /// The bundle, gzipped at build time.
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The URL of bundle `name` (`study.js`); a name that was not built yields a URL that answers
/// 404 (the web tests request every page's assets).
pub fn url(name: &str) -> &'static str {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or("/assets/not-built", |a| a.url)
}

/// Whether the request's `Accept-Encoding` allows gzip.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.trim().split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `GET /assets/{file}`: a bundle by its hashed name, cached for a year (the name changes
/// with the content).
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let wanted = format!("/assets/{file}");
    let Some(asset) = ASSETS.iter().find(|a| a.url == wanted) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let gzip = accepts_gzip(&headers);
    let body = if gzip { asset.gzip } else { asset.body };
    let mut response = (
        [
            (CONTENT_TYPE, asset.content_type),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (VARY, "Accept-Encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        response.headers_mut().insert(
            CONTENT_ENCODING,
            axum::http::HeaderValue::from_static("gzip"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn every_page_bundle_is_built_and_named_by_its_hash() {
        for name in [
            "base.js", "study.js", "model.js", "rig.js", "rigs.js", "app.css",
        ] {
            let url = url(name);
            assert!(
                url.starts_with("/assets/") && url != "/assets/not-built",
                "{name}"
            );
        }
    }

    #[test]
    fn gzip_is_chosen_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("br, gzip;q=0.8"));
        assert!(accepts_gzip(&h));
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, br"));
        assert!(!accepts_gzip(&h));
    }
}
