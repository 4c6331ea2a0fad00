//! Every role in a real headless Chromium, against the real server and the real live pipeline
//! (dtop-broker with logins, the rig simulator, dtop-edge, dtop-twin): an admin, an operator of
//! the rig, an operator of another rig, a researcher and a dashboard each log in through the
//! form, and the test checks what each sees and may do on the rigs overview (the rig listed or
//! not), the rig page (the live feed or the 403 page; the command panel or none, and the API's
//! answer to a command sent from the page) and the study form (submit or read-only). One
//! server, one pipeline and one browser for the whole file; a PNG of every page goes to
//! `target/browser-screenshots/roles-*.png`. Without chromium and chromedriver the test skips,
//! or fails under `DTOP_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::time::Duration;

use common::browser::{browser, eval, log_in, snap, start_driver, until};
use common::pipeline::{Pipeline, RIG, start_broker};
use common::{Options, Server, password};
use dtop_auth::credentials::add_user;
use dtop_auth::{RigSpec, Role, Secret};
use fantoccini::{Client, Locator};
use serde_json::json;

/// What one user should see and be allowed on rig `RIG` and the studies.
struct Expect {
    user: &'static str,
    /// Listed on the overview, watched live on its page.
    sees_rig: bool,
    /// The command panel, and a command from the page accepted (202) rather than 403.
    commands: bool,
    /// The study form's submit button rather than a read-only form.
    submits: bool,
}

const CASES: &[Expect] = &[
    Expect {
        user: "root",
        sees_rig: true,
        commands: true,
        submits: true,
    },
    Expect {
        user: "op-a",
        sees_rig: true,
        commands: true,
        submits: true,
    },
    Expect {
        user: "op-b",
        sees_rig: false,
        commands: false,
        submits: true,
    },
    Expect {
        user: "ada",
        sees_rig: true,
        commands: false,
        submits: true,
    },
    Expect {
        user: "wall",
        sees_rig: true,
        commands: false,
        submits: false,
    },
];

/// The status of a command POSTed by the page itself (session cookie and CSRF token).
async fn command_status(c: &Client, body: &str) -> u64 {
    c.execute_async(
        &format!(
            "const done = arguments[0]; fetch('/api/v1/rigs/{RIG}/commands', {{method: 'POST', \
             headers: {{'content-type': 'application/json', 'x-csrf-token': \
             document.querySelector('meta[name=\"csrf-token\"]').content}}, body: '{body}'}}) \
             .then(r => done(r.status));"
        ),
        vec![],
    )
    .await
    .unwrap()
    .as_u64()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_sees_and_may_do_what_its_rules_allow_on_rigs_and_studies_in_a_real_browser() {
    let Some(driver) = start_driver().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker(dir.path()).await;
    let server = Server::start(Options {
        mqtt: Some(broker.mqtt_addr()),
        ..Options::default()
    })
    .await;
    let users = server.credentials_file.clone();
    tokio::task::spawn_blocking(move || {
        for (user, rig) in [("op-a", RIG), ("op-b", "rig-b")] {
            add_user(
                &users,
                user,
                Role::Operator,
                RigSpec::List(vec![rig.into()]),
                Some(&Secret::new(password(user))),
            )
            .unwrap();
        }
    })
    .await
    .unwrap();
    let pipeline = Pipeline::start(dir.path(), broker.mqtt_addr().port()).await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    for expect in CASES {
        let user = expect.user;

        // The overview lists the rig only for those who may watch it.
        log_in(&c, &server, user, "/rigs").await;
        let row = format!("document.querySelector('tr[data-rig=\"{RIG}\"]')");
        if expect.sees_rig {
            until(
                &c,
                &format!(
                    "{row}?.querySelector('td[data-field=\"online\"]').textContent === 'true'"
                ),
                &format!("{user}: the rig's row online"),
            )
            .await;
        } else {
            // Absence can only be seen over time: the feed open, then three summary rounds
            // (one a second) without the rig.
            until(
                &c,
                "window.dtopRigs && window.dtopRigs.opened > 0",
                &format!("{user}: the overview feed open"),
            )
            .await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert_eq!(
                eval(&c, &format!("!!{row}")).await,
                json!(false),
                "{user} sees rig {RIG} listed"
            );
            c.find(Locator::Id("no-rigs")).await.unwrap();
        }
        snap(&c, &format!("roles-{user}-1-rigs")).await;

        // The rig page: the live feed and the command panel, or the 403 page saying why.
        c.goto(&server.url(&format!("/rigs/{RIG}"))).await.unwrap();
        if expect.sees_rig {
            until(
                &c,
                "window.dtopLive && window.dtopLive.frames > 3",
                &format!("{user}: the live feed"),
            )
            .await;
            assert_eq!(
                c.find(Locator::Id("commands")).await.is_ok(),
                expect.commands,
                "{user}: command panel"
            );
            // A command that moves nothing (the actuator to its safe state, off): accepted
            // for those with the panel, refused by the API for the others.
            let status = command_status(&c, r#"{"kind":"actuator_disable"}"#).await;
            assert_eq!(
                status,
                if expect.commands { 202 } else { 403 },
                "{user}: a command from the rig page"
            );
        } else {
            let message = c
                .find(Locator::Id("error-message"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert!(
                message.contains(&format!("do not let you watch rig {RIG}")),
                "{user}: {message}"
            );
            let status = command_status(&c, r#"{"kind":"actuator_disable"}"#).await;
            assert_eq!(status, 403, "{user}: a command for a rig not theirs");
        }
        snap(&c, &format!("roles-{user}-2-rig")).await;

        // The study form: submit, or read-only saying which roles may.
        c.goto(&server.url("/studies/new/uncertainty"))
            .await
            .unwrap();
        c.find(Locator::Id("study-form")).await.unwrap();
        assert_eq!(
            c.find(Locator::Id("submit")).await.is_ok(),
            expect.submits,
            "{user}: submit button"
        );
        assert_eq!(
            c.find(Locator::Id("read-only")).await.is_ok(),
            !expect.submits,
            "{user}: read-only notice"
        );
        snap(&c, &format!("roles-{user}-3-study-form")).await;
    }

    c.close().await.unwrap();
    drop(driver);
    pipeline.stop().await;
    server.stop().await;
    drop(broker);
}
