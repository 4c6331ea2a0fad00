//! The browser pages over HTTP, against the real server and engine: the session cookie's
//! attributes, the login form's `?next=`, CSRF refusals, the security headers on every kind of
//! response, role refusals with a 403 page that says why, session expiry, the study form's
//! field problems, the assets, the downloads and HTTPS with `Secure` cookies. The browser
//! itself is driven in `browser_studies.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::{Options, Server, WAIT, password};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A client that does not follow redirects, so tests see each 303.
fn client(server: &Server) -> reqwest::Client {
    let _ = server;
    reqwest::Client::builder()
        .timeout(WAIT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of cookie `name` among the response's `Set-Cookie` headers, with the header.
fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|header| {
            let value = header
                .split(';')
                .next()
                .unwrap()
                .split_once('=')
                .unwrap()
                .1
                .to_owned();
            (value, header)
        })
}

/// The attribute value that follows `marker` in `html`, as a browser reads it (entities
/// decoded).
fn hidden(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in {html}"))
        + marker.len();
    unescape(html[start..].split('"').next().unwrap())
}

fn unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#38;", "&")
}

/// A logged-in browser: its session cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    fn cookie_header(&self) -> String {
        format!("dtop_session={}", self.cookie)
    }
}

/// Logs `user` in through the login form, following `next`; the response to the form post.
async fn login_form(server: &Server, user: &str, pass: &str, next: &str) -> Response {
    let c = client(server);
    let page = c
        .get(server.url(&format!("/login?next={}", urlencode(next))))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (form_cookie, _) = set_cookie(page.headers(), "dtop_login_csrf").unwrap();
    let html = page.text().await.unwrap();
    let token = hidden(&html, "name=\"_csrf\" value=\"");
    let kept_next = hidden(&html, "name=\"next\" value=\"");
    c.post(server.url("/login"))
        .header("cookie", format!("dtop_login_csrf={form_cookie}"))
        .form(&[
            ("username", user),
            ("password", pass),
            ("next", kept_next.as_str()),
            ("_csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn login(server: &Server, user: &str) -> Session {
    let response = login_form(server, user, &password(user), "/studies").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "login {user}");
    let (cookie, _) = set_cookie(response.headers(), "dtop_session").unwrap();
    let page = client(server)
        .get(server.url("/studies"))
        .header("cookie", format!("dtop_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let csrf = hidden(&html, "name=\"csrf-token\" content=\"");
    Session { cookie, csrf }
}

async fn get(server: &Server, session: &Session, path: &str) -> Response {
    client(server)
        .get(server.url(path))
        .header("cookie", session.cookie_header())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn login_sets_an_http_only_strict_session_cookie_and_goes_to_next() {
    let server = Server::start(Options::default()).await;
    let response = login_form(&server, "ada", &password("ada"), "/studies?kind=modal").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/studies?kind=modal");
    let (token, header) = set_cookie(response.headers(), "dtop_session").unwrap();
    assert_eq!(token.len(), 43);
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: {header}");
    // The token never appears in a URL, and the server log has neither it nor the password.
    assert!(
        !response.headers()[LOCATION]
            .to_str()
            .unwrap()
            .contains(&token)
    );
    let logs = common::logs().text();
    assert!(!logs.contains(&token) && !logs.contains(&password("ada")));

    let wrong = login_form(&server, "ada", "not-the-password", "/studies").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(wrong.headers(), "dtop_session").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    server.stop().await;
}

#[tokio::test]
async fn next_refuses_off_site_urls() {
    let server = Server::start(Options::default()).await;
    for next in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
    ] {
        let response = login_form(&server, "ada", &password("ada"), next).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()[LOCATION], "/", "{next}");
    }
    server.stop().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let server = Server::start(Options::default()).await;
    let ada = login(&server, "ada").await;
    let studies = get(&server, &ada, "/studies").await.text().await.unwrap();
    let asset = hidden(&studies, "<link rel=\"stylesheet\" href=\"");
    for path in [
        "/studies",
        "/studies?kind=uncertainty&model=cristallo-msd3&user=ada",
        "/studies/new/uncertainty",
        "/models",
        "/models/southampton",
        "/models/southampton/1",
        "/models/compare?a=southampton@1&b=cristallo-msd3@1",
        "/login",
        "/no-such-page",
        "/studies/st_nope",
        "/api/v1/whoami",
        "/api/v1/nothing",
        "/healthz",
        asset.as_str(),
    ] {
        let r = get(&server, &ada, path).await;
        let h = r.headers();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(!text.contains("<script>"), "no inline script on {path}");
        assert!(!text.contains("style=\""), "no inline style on {path}");
        match path {
            "/no-such-page" | "/studies/st_nope" => {
                assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
                assert!(text.contains("404"), "{path}: {text}");
            }
            "/api/v1/nothing" => assert_eq!(status, StatusCode::NOT_FOUND),
            // Logged in already: the login page sends the browser on.
            "/login" => assert_eq!(status, StatusCode::SEE_OTHER),
            _ => assert!(status.is_success(), "{path}: {status} {text}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn state_changing_requests_by_cookie_need_the_session_csrf_token() {
    let server = Server::start(Options::default()).await;
    let ada = login(&server, "ada").await;
    let c = client(&server);
    let submit = |csrf: Option<&str>| {
        let mut request = c
            .post(server.url("/api/v1/studies"))
            .header("cookie", ada.cookie_header())
            .json(&json!({"kind": "modal", "model": "southampton"}));
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        request.send()
    };
    let missing = submit(None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::FORBIDDEN);
    let body: Value = missing.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("CSRF"), "{body}");
    let wrong = submit(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let right = submit(Some(&ada.csrf)).await.unwrap();
    assert_eq!(right.status(), StatusCode::CREATED);
    // Reading needs no token; bearer-token calls are exempt (nothing sends them implicitly).
    assert_eq!(
        get(&server, &ada, "/api/v1/whoami").await.status(),
        StatusCode::OK
    );
    let token = server.login("ada").await;
    let bearer = c
        .post(server.url("/api/v1/studies"))
        .bearer_auth(&token)
        .json(&json!({"kind": "modal", "model": "southampton"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::CREATED);

    // Forms: logout and the study form without or with a wrong `_csrf` are refused.
    for form in [vec![], vec![("_csrf", "wrong")]] {
        let r = c
            .post(server.url("/logout"))
            .header("cookie", ada.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = c
            .post(server.url("/studies/new/modal"))
            .header("cookie", ada.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let out = c
        .post(server.url("/logout"))
        .header("cookie", ada.cookie_header())
        .form(&[("_csrf", ada.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(out.headers()[LOCATION], "/login");
    let (cleared, header) = set_cookie(out.headers(), "dtop_session").unwrap();
    assert!(
        cleared.is_empty() && header.contains("Max-Age=0"),
        "{header}"
    );
    // The session is revoked on the server, not only forgotten by the browser.
    assert_eq!(
        get(&server, &ada, "/api/v1/whoami").await.status(),
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

#[tokio::test]
async fn a_dashboard_user_cannot_submit_or_cancel_and_the_403_page_says_why() {
    let server = Server::start(Options::default()).await;
    let wall = login(&server, "wall").await;
    let c = client(&server);
    let form = get(&server, &wall, "/studies/new/uncertainty").await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(html.contains("id=\"read-only\""), "{html}");
    assert!(!html.contains("id=\"submit\""));

    let refused = c
        .post(server.url("/studies/new/modal"))
        .header("cookie", wall.cookie_header())
        .form(&[("_csrf", wall.csrf.as_str()), ("model", "southampton")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let html = refused.text().await.unwrap();
    assert!(
        html.contains("Your role (dashboard) may not submit studies"),
        "{html}"
    );
    for role in ["operator", "researcher", "admin"] {
        assert!(html.contains(&format!("<li>{role}</li>")), "{role}: {html}");
    }

    let token = server.login("ada").await;
    let study: Value = c
        .post(server.url("/api/v1/studies"))
        .bearer_auth(&token)
        .json(&json!({"kind": "modal", "model": "southampton"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = study["id"].as_str().unwrap();
    let page = get(&server, &wall, &format!("/studies/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("id=\"cancel\""),
        "no cancel button for a dashboard"
    );
    let refused = c
        .post(server.url(&format!("/studies/{id}/cancel")))
        .header("cookie", wall.cookie_header())
        .form(&[("_csrf", wall.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("may not cancel studies")
    );
    // The API answers the same refusal to the same cookie.
    let api = c
        .post(server.url(&format!("/api/v1/studies/{id}/cancel")))
        .header("cookie", wall.cookie_header())
        .header("x-csrf-token", &wall.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::FORBIDDEN);

    // A researcher may cancel their own study from the page.
    let ada = login(&server, "ada").await;
    let page = get(&server, &ada, &format!("/studies/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"cancel\""), "{page}");
    let cancelled = c
        .post(server.url(&format!("/studies/{id}/cancel")))
        .header("cookie", ada.cookie_header())
        .form(&[("_csrf", ada.csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    let record: Value = c
        .get(server.url(&format!("/api/v1/studies/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["state"], "cancelled");
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_sends_the_browser_to_login_with_the_page_remembered() {
    let server = Server::start(Options {
        token_lifetime_s: 1,
        ..Options::default()
    })
    .await;
    let ada = login(&server, "ada").await;
    // Expiry is a matter of time passing; nothing else to wait on.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = get(&server, &ada, "/studies?kind=modal&user=ada").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert_eq!(location, "/login?next=/studies%3Fkind%3Dmodal%26user%3Dada");
    // Page scripts get 401 from the API and go to the login page themselves.
    assert_eq!(
        get(&server, &ada, "/api/v1/whoami").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The login page keeps `next` and lands there.
    let again = login_form(
        &server,
        "ada",
        &password("ada"),
        "/studies?kind=modal&user=ada",
    )
    .await;
    assert_eq!(again.headers()[LOCATION], "/studies?kind=modal&user=ada");
    server.stop().await;
}

#[tokio::test]
async fn a_study_form_with_bad_values_shows_every_problem_next_to_its_field() {
    let server = Server::start(Options::default()).await;
    let ada = login(&server, "ada").await;
    let html = get(
        &server,
        &ada,
        "/studies/new/uncertainty?model=cristallo-msd3",
    )
    .await
    .text()
    .await
    .unwrap();
    // Pre-filled from the kind's defaults for the model, as the API serves them.
    let token = server.login("ada").await;
    let defaults: Value = server
        .client
        .get(server.url("/api/v1/kinds/uncertainty/defaults?model=cristallo-msd3"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let samples = defaults["samples"].to_string();
    assert!(
        html.contains(&format!(
            "name=\"p.samples\" id=\"field-samples\" value=\"{samples}\""
        )),
        "{html}"
    );
    let mut form: Vec<(String, String)> = Vec::new();
    let mut rest = html.as_str();
    while let Some(i) = rest.find("name=\"p.") {
        let after = &rest[i + 6..];
        let name = after.split('"').next().unwrap().to_owned();
        let value = after
            .split_once("value=\"")
            .map(|(_, v)| unescape(v.split('"').next().unwrap()))
            .unwrap_or_default();
        form.push((name, value));
        rest = after;
    }
    let set = |form: &mut Vec<(String, String)>, name: &str, value: &str| {
        form.iter_mut().find(|(k, _)| k == name).unwrap().1 = value.to_owned();
    };
    set(&mut form, "p.frequencies", "1");
    set(&mut form, "p.f_min_hz", "-3");
    set(&mut form, "p.samples", "many");
    form.push(("_csrf".into(), ada.csrf.clone()));
    form.push(("model".into(), "cristallo-msd3".into()));
    let r = client(&server)
        .post(server.url("/studies/new/uncertainty"))
        .header("cookie", ada.cookie_header())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    // A value that is not a number is caught before the engine; the engine's own checks come
    // once every value can be read, so this form is sent again with `samples` fixed.
    assert!(
        html.contains("data-field=\"samples\">must be a number"),
        "{html}"
    );
    assert!(html.contains("value=\"many\""), "the typed text is kept");
    set(&mut form, "p.samples", "100");
    let r = client(&server)
        .post(server.url("/studies/new/uncertainty"))
        .header("cookie", ada.cookie_header())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let html = r.text().await.unwrap();
    for field in ["frequencies", "f_min_hz"] {
        assert!(
            html.contains(&format!("data-field=\"{field}\"")),
            "{field}: {html}"
        );
    }
    assert!(
        html.contains("class=\"field invalid\" id=\"field-frequencies-field\""),
        "{html}"
    );
    set(&mut form, "p.frequencies", "40");
    set(&mut form, "p.f_min_hz", "0.5");
    let r = client(&server)
        .post(server.url("/studies/new/uncertainty"))
        .header("cookie", ada.cookie_header())
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{}",
        r.text().await.unwrap()
    );
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.starts_with("/studies/st_"), "{location}");
    let id = location.trim_start_matches("/studies/");
    let record: Value = server
        .client
        .get(server.url(&format!("/api/v1/studies/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["submitted_by"], "ada");
    assert_eq!(record["params"]["frequencies"], 40);
    assert_eq!(record["params"]["samples"], 100);
    server.stop().await;
}

#[tokio::test]
async fn assets_and_api_json_are_gzipped_when_accepted_and_html_pages_never() {
    let server = Server::start(Options::default()).await;
    let ada = login(&server, "ada").await;
    let fetch = |path: &'static str, gzip: bool| {
        let mut request = client(&server)
            .get(server.url(path))
            .header("cookie", ada.cookie_header());
        if gzip {
            request = request.header("accept-encoding", "gzip");
        }
        request.send()
    };
    // API JSON: gzipped when accepted, and the same document once inflated.
    let plain = fetch("/api/v1/openapi.json", false).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    let gz = fetch("/api/v1/openapi.json", true).await.unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let gz = gz.bytes().await.unwrap();
    assert!(
        gz.len() < plain.len() / 2,
        "{} of {} bytes",
        gz.len(),
        plain.len()
    );
    let mut inflated = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut inflated).unwrap();
    assert_eq!(inflated, plain);
    // HTML pages hold the CSRF token next to text the request chose: never compressed (BREACH).
    let page = fetch("/studies?kind=frf", true).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("content-encoding").is_none());
    assert!(page.text().await.unwrap().contains("csrf-token"));

    let html = get(&server, &ada, "/studies").await.text().await.unwrap();
    let css = hidden(&html, "<link rel=\"stylesheet\" href=\"");
    let js = hidden(&html, "<script src=\"");
    for url in [&css, &js] {
        assert!(url.starts_with("/assets/"), "{url}");
        let plain = client(&server).get(server.url(url)).send().await.unwrap();
        assert_eq!(
            plain.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(plain.headers().get("content-encoding").is_none());
        let plain_len = plain.bytes().await.unwrap().len();
        let gz = client(&server)
            .get(server.url(url))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gz.headers()["content-encoding"], "gzip");
        assert!(gz.bytes().await.unwrap().len() < plain_len);
    }
    let missing = client(&server)
        .get(server.url("/assets/app-0000.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn the_whole_result_downloads_as_json_and_csv_equal_to_the_api_arrays() {
    let server = Server::start(Options {
        workers: 1,
        ..Options::default()
    })
    .await;
    let ada = login(&server, "ada").await;
    let token = server.login("ada").await;
    let study: Value = server
        .client
        .post(server.url("/api/v1/studies"))
        .bearer_auth(&token)
        .json(&json!({"kind": "frf", "model": "southampton",
            "params": {"grid": {"f_min_hz": 1.0, "f_max_hz": 40.0, "df_hz": 1.0}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = study["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r: Value = server
            .client
            .get(server.url(&format!("/api/v1/studies/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["state"] == "succeeded" {
            break;
        }
        assert!(r["state"] != "failed", "{r}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "study did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result: Value = server
        .client
        .get(server.url(&format!("/api/v1/studies/{id}/result")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let json_download = get(&server, &ada, &format!("/studies/{id}/download.json")).await;
    assert!(
        json_download.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let whole: Value = json_download.json().await.unwrap();
    assert_eq!(whole["summary"], result["summary"]);
    let csv = get(&server, &ada, &format!("/studies/{id}/download.csv"))
        .await
        .text()
        .await
        .unwrap();
    for array in result["arrays"].as_array().unwrap() {
        let name = array["name"].as_str().unwrap();
        let api_csv = server
            .client
            .get(server.url(&format!("/api/v1/studies/{id}/arrays/{name}?format=csv")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            csv.contains(&format!("# array: {name}\n{api_csv}")),
            "{name}"
        );
        let in_json = whole["arrays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap();
        assert_eq!(
            in_json["columns"].as_array().unwrap().len(),
            array["columns"].as_array().unwrap().len()
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn serves_https_with_secure_cookies_when_tls_is_configured() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::from_params(&ca_params, &ca_key))
        .unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    let server = Server::start(Options {
        tls: Some(dtop_server::config::TlsConfig {
            cert_file,
            key_file,
        }),
        tls_root_pem: Some(ca_pem.clone()),
        ..Options::default()
    })
    .await;
    assert!(server.base.starts_with("https://"));
    let c = reqwest::Client::builder()
        .timeout(WAIT)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let page = c.get(server.url("/login")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let (form_cookie, header) = set_cookie(page.headers(), "dtop_login_csrf").unwrap();
    assert!(header.ends_with("; Secure"), "{header}");
    let html = page.text().await.unwrap();
    let token = hidden(&html, "name=\"_csrf\" value=\"");
    let pw = password("ada");
    let r = c
        .post(server.url("/login"))
        .header("cookie", format!("dtop_login_csrf={form_cookie}"))
        .form(&[
            ("username", "ada"),
            ("password", pw.as_str()),
            ("next", "/models"),
            ("_csrf", token.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, header) = set_cookie(r.headers(), "dtop_session").unwrap();
    assert!(
        header.contains("HttpOnly") && header.ends_with("; Secure"),
        "{header}"
    );
    // The API answers over the same TLS listener.
    let whoami = server
        .client
        .get(server.url("/api/v1/whoami"))
        .bearer_auth(server.login("ada").await)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), StatusCode::OK);
    server.stop().await;
}

/// Posts the model "add" form as `session` (with its CSRF token unless `csrf` is false).
async fn post_model(
    server: &Server,
    session: &Session,
    name: &str,
    spec: &str,
    csrf: bool,
) -> Response {
    let token = if csrf { session.csrf.as_str() } else { "" };
    client(server)
        .post(server.url("/models/new"))
        .header("cookie", session.cookie_header())
        .form(&[("_csrf", token), ("name", name), ("spec", spec)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_model_add_form_checks_like_the_api_and_adds_a_model_then_its_next_version() {
    let server = Server::start(Options::default()).await;
    let ada = login(&server, "ada").await;
    let wall = login(&server, "wall").await;

    // The form starts from a valid spec; a dashboard sees it read-only.
    let html = get(&server, &ada, "/models/new")
        .await
        .text()
        .await
        .unwrap();
    let spec = unescape(
        html.split("id=\"field-spec\" rows=\"18\">")
            .nth(1)
            .unwrap()
            .split("</textarea>")
            .next()
            .unwrap(),
    );
    let _: Value = serde_json::from_str(&spec).unwrap();
    let html = get(&server, &wall, "/models/new")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("id=\"read-only\""), "{html}");
    assert!(!html.contains("id=\"submit\""), "{html}");

    // Every problem at once, each next to its field, the typed text kept.
    let bad_spec = spec.replacen("\"floor_masses_kg\": [", "\"floor_masses_kg\": [-1.0, ", 1);
    assert_ne!(bad_spec, spec);
    let response = post_model(&server, &ada, "Bad Name!", &bad_spec, true).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let html = response.text().await.unwrap();
    let name_problem = html
        .split("<p class=\"problem\" data-field=\"name\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no name problem in {html}"));
    assert!(name_problem.contains("lowercase"), "{name_problem}");
    let spec_problem = html
        .split("<p class=\"problem\" data-field=\"spec\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no model problem in {html}"));
    assert!(spec_problem.contains("floor_masses_kg"), "{spec_problem}");
    assert!(html.contains("value=\"Bad Name!\""), "{html}");
    // A spec that is not even JSON is answered next to the model field too.
    let html = post_model(&server, &ada, "two-storey", "{not json", true)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-field=\"spec\""), "{html}");

    // No CSRF token, or a role that may not add: refused, nothing added.
    let response = post_model(&server, &ada, "two-storey", &spec, false).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = post_model(&server, &wall, "two-storey", &spec, true).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let html = response.text().await.unwrap();
    assert!(html.contains("add models"), "{html}");

    // A new name is version 1; the same name again is version 2, made by the poster.
    let response = post_model(&server, &ada, "two-storey", &spec, true).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/models/two-storey/1");
    let html = get(&server, &ada, "/models/new?name=two-storey")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("New version of two-storey"), "{html}");
    let response = post_model(&server, &ada, "two-storey", &spec, true).await;
    assert_eq!(response.headers()[LOCATION], "/models/two-storey/2");
    let token = server.login("ada").await;
    let versions: Value = server
        .client
        .get(server.url("/api/v1/models/two-storey"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[1]["created_by"], "ada");
    assert_eq!(
        versions[1]["spec"],
        serde_json::from_str::<Value>(&spec).unwrap()
    );
    server.stop().await;
}
