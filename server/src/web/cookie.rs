//! Owns the browser session's wire details as pure functions: reading and writing the
//! `dtop_session` cookie, comparing CSRF tokens in constant time, and accepting a `?next=`
//! only when it is a path on this site. Knows nothing about the session store or pages.

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "dtop_session";
/// The login form's own CSRF cookie (there is no session yet to bind a token to).
pub const LOGIN_CSRF_COOKIE: &str = "dtop_login_csrf";
/// The header page scripts send the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field pages send the CSRF token in.
pub const CSRF_FIELD: &str = "_csrf";
/// Longest `next` accepted; a longer one is dropped rather than echoed.
const MAX_NEXT_LEN: usize = 2048;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for `name=value`: HttpOnly, SameSite=Strict, Path=/, `Secure` under
/// TLS, living `max_age_s` (0 deletes it). `value` is base64url, so it needs no quoting.
pub fn set(name: &str, value: &str, max_age_s: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    ))
    .ok()
}

/// Whether `given` is the session's CSRF token, in time independent of where they differ.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// `next` if it is a path on this site (`/studies?kind=modal`), else `None`: no scheme, no
/// host, no `//` or `/\` (which browsers read as another host), no control characters.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.len() <= MAX_NEXT_LEN
        && next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    ok.then_some(next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn reads_one_cookie_among_several_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; dtop_session=tok"));
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(read(&h, SESSION_COOKIE), Some("tok"));
        assert_eq!(read(&h, "b"), Some("2"));
        assert_eq!(read(&h, "c"), None);
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
        let plain = set(SESSION_COOKIE, "t", 60, false).unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(plain.contains("Path=/") && !plain.contains("Secure"));
        let tls = set(SESSION_COOKIE, "t", 60, true).unwrap();
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn csrf_tokens_match_only_when_equal() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("abc", "ab"));
        assert!(!csrf_matches("abc", ""));
    }

    #[test]
    fn next_accepts_only_paths_on_this_site() {
        assert_eq!(
            safe_next("/studies?kind=modal"),
            Some("/studies?kind=modal")
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "evil",
            "javascript:alert(1)",
            "/a\nb",
            "",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
