//! Owns the rig pages: `/rigs`, every rig the user's rules let them see, kept live over
//! `/ws/rigs`; and `/rigs/{rig}`, one rig live (plots, summary, history, exports) with the
//! command panel only for users whose rules allow the rig's cmd topic. The data and every
//! refusal come from `crate::live`; these handlers only render.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use dtop_proto::RigId;

use crate::error::ApiError;
use crate::extract::Shared;
use crate::live::rights;
use crate::web::page::{Chrome, PageError, PageUser, render};

/// The overview.
#[derive(Template)]
#[template(path = "rigs.html")]
struct RigsPage {
    chrome: Chrome,
    /// Whether the server has live rigs at all (`[mqtt]`).
    configured: bool,
}

/// One rig.
#[derive(Template)]
#[template(path = "rig.html")]
struct RigPage {
    chrome: Chrome,
    rig: String,
    may_command: bool,
    window_s: f64,
    history: bool,
}

/// `GET /rigs`.
pub async fn list(State(state): State<Shared>, user: PageUser) -> Result<Response, PageError> {
    render(&RigsPage {
        chrome: user.chrome("rigs"),
        configured: state.live.is_some(),
    })
}

/// `GET /rigs/{rig}`.
pub async fn show(
    State(state): State<Shared>,
    user: PageUser,
    Path(rig): Path<String>,
) -> Result<Response, PageError> {
    let Ok(rig) = RigId::new(rig.as_str()) else {
        return Err(PageError::NotFound(
            Some(Box::new(user.chrome("rigs"))),
            format!("{rig:?} is not a rig id."),
        ));
    };
    let Some(live) = &state.live else {
        return Err(PageError::api(
            &user,
            "rigs",
            ApiError::NotConfigured(
                "Live rigs are not configured on this server: give it an [mqtt] section.".into(),
            ),
        ));
    };
    let r = rights(&live.acl, &user.identity, &rig);
    if !r.samples {
        return Err(PageError::api(
            &user,
            "rigs",
            ApiError::ForbiddenBecause(format!(
                "Your role ({}) and rig list do not let you watch rig {rig}: the broker's rules \
                 do not allow you its samples.",
                user.identity.role
            )),
        ));
    }
    render(&RigPage {
        chrome: user.chrome("rigs"),
        rig: rig.to_string(),
        may_command: r.command,
        window_s: live.config.window_s,
        history: live.history.is_some(),
    })
}
