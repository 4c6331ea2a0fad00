//! Owns what every page shares: the logged-in browser user ([`PageUser`], from the session
//! cookie; none sends the browser to the login page with the page remembered), the layout's
//! data ([`Chrome`]), rendering a template, and [`PageError`], which answers as an HTML page
//! (403 saying which roles may, 404, or the engine's refusal). Knows nothing about any one page.

use askama::Template;
use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use dtop_auth::{Action, Identity, RigScope, Role};

use crate::error::ApiError;
use crate::extract::Shared;
use crate::web::{assets, cookie};

/// The user of a page: a live session cookie whose user is still in the credentials file.
#[derive(Debug, Clone)]
pub struct PageUser {
    /// Who.
    pub identity: Identity,
    /// The session's CSRF token, for forms and scripts.
    pub csrf: String,
}

impl PageUser {
    /// Refuses with the 403 page (saying which roles may `what`) unless the role allows
    /// `action`, by the same rule as the API and MQTT (`dtop_auth::allowed`).
    ///
    /// # Errors
    /// [`PageError::Forbidden`].
    pub fn require(&self, action: Action, what: &'static str) -> Result<(), PageError> {
        if self.may(action) {
            Ok(())
        } else {
            Err(PageError::Forbidden {
                chrome: Box::new(self.chrome("")),
                action,
                what,
            })
        }
    }

    /// Whether the role allows `action`.
    pub fn may(&self, action: Action) -> bool {
        dtop_auth::allowed(&self.identity, action)
    }

    /// Refuses a form post whose `_csrf` field is not this session's token.
    ///
    /// # Errors
    /// [`PageError::Csrf`].
    pub fn check_csrf(&self, given: &str) -> Result<(), PageError> {
        if cookie::csrf_matches(&self.csrf, given) {
            Ok(())
        } else {
            Err(PageError::Csrf)
        }
    }

    /// The layout's data, with `section` (`studies`, `models`, `rigs`) marked current.
    pub fn chrome(&self, section: &'static str) -> Chrome {
        Chrome {
            user: Some(UserView {
                name: self.identity.username.clone(),
                role: self.identity.role.to_string(),
            }),
            csrf: self.csrf.clone(),
            section,
        }
    }
}

impl FromRequestParts<Shared> for PageUser {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, PageError> {
        let here = parts
            .extensions
            .get::<OriginalUri>()
            .map_or_else(|| parts.uri.clone(), |u| u.0.clone());
        let next = here.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        current_user(state, &parts.headers).ok_or(PageError::Login { next })
    }
}

/// The user of the session cookie in `headers`, if it is live and the user still exists.
pub fn current_user(state: &Shared, headers: &HeaderMap) -> Option<PageUser> {
    let token = cookie::read(headers, cookie::SESSION_COOKIE)?;
    let session = state.sessions.info(token)?;
    let identity = state.users.identity(&session.username)?;
    Some(PageUser {
        identity,
        csrf: session.csrf,
    })
}

/// The logged-in user as the header shows them.
#[derive(Debug, Clone)]
pub struct UserView {
    /// User name.
    pub name: String,
    /// Role.
    pub role: String,
}

/// What the base layout (`templates/base.html`) needs from every page.
#[derive(Debug, Clone)]
pub struct Chrome {
    /// Who is logged in; `None` on the login page.
    pub user: Option<UserView>,
    /// The session's CSRF token (the login form's own before login), in a `<meta>` for scripts.
    pub csrf: String,
    /// The nav entry marked current.
    pub section: &'static str,
}

impl Chrome {
    /// The layout of a page nobody is logged in on.
    pub fn anonymous(csrf: String) -> Self {
        Self {
            user: None,
            csrf,
            section: "",
        }
    }

    /// The logged-in user's role, or nothing.
    pub fn role(&self) -> &str {
        self.user.as_ref().map_or("", |u| u.role.as_str())
    }

    /// The URL of bundle `name` (`study.js`, `app.css`).
    pub fn asset(&self, name: &str) -> &'static str {
        assets::url(name)
    }
}

/// Renders `template` as an HTML page.
///
/// # Errors
/// [`PageError::Internal`] when rendering fails.
pub fn render<T: Template>(template: &T) -> Result<Response, PageError> {
    template
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|e| PageError::Internal(e.to_string()))
}

/// The error page's template.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    status: u16,
    title: &'a str,
    message: String,
    roles: Vec<String>,
}

/// Why a page cannot be shown.
#[derive(Debug)]
pub enum PageError {
    /// No live session: go to the login page, then back to `next`.
    Login {
        /// The path and query to come back to.
        next: String,
    },
    /// The role may not do this.
    Forbidden {
        /// The layout.
        chrome: Box<Chrome>,
        /// The refused action.
        action: Action,
        /// The action in words, for the page: "submit studies".
        what: &'static str,
    },
    /// A form came without this session's CSRF token.
    Csrf,
    /// No such page or thing.
    NotFound(Option<Box<Chrome>>, String),
    /// The engine refused or failed.
    Api(Option<Box<Chrome>>, ApiError),
    /// Anything else; logged, not shown.
    Internal(String),
}

impl PageError {
    /// An engine or API error, shown inside the user's layout.
    pub fn api(user: &PageUser, section: &'static str, e: impl Into<ApiError>) -> Self {
        Self::Api(Some(Box::new(user.chrome(section))), e.into())
    }
}

/// Every role whose rules allow `action` (from `dtop_auth::allowed`, not a second list).
pub fn roles_allowed(action: Action) -> Vec<String> {
    Role::ALL
        .into_iter()
        .filter(|role| {
            dtop_auth::allowed(
                &Identity {
                    username: String::new(),
                    role: *role,
                    rigs: RigScope::All,
                },
                action,
            )
        })
        .map(|role| role.to_string())
        .collect()
}

/// `/login?next=...` with `next` percent-encoded.
pub fn login_url(next: &str) -> String {
    let mut url = String::from("/login?next=");
    for b in next.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let bare = || Chrome::anonymous(String::new());
        let (status, chrome, title, message, roles) = match self {
            Self::Login { next } => {
                let target = match cookie::safe_next(&next) {
                    Some(next) => login_url(next),
                    None => "/login".to_owned(),
                };
                return Redirect::to(&target).into_response();
            }
            Self::Forbidden {
                chrome,
                action,
                what,
            } => {
                let role = chrome
                    .user
                    .as_ref()
                    .map_or_else(String::new, |u| u.role.clone());
                (
                    StatusCode::FORBIDDEN,
                    *chrome,
                    "Not allowed",
                    format!("Your role ({role}) may not {what}. These roles may:"),
                    roles_allowed(action),
                )
            }
            Self::Csrf => (
                StatusCode::FORBIDDEN,
                bare(),
                "Form expired",
                "The form lacked this session's CSRF token (it may be from an older login). \
                 Go back, reload the page and send it again."
                    .to_owned(),
                Vec::new(),
            ),
            Self::NotFound(chrome, what) => (
                StatusCode::NOT_FOUND,
                chrome.map_or_else(bare, |c| *c),
                "Not found",
                what,
                Vec::new(),
            ),
            Self::Api(chrome, e) => {
                let status = e.status();
                let message = e.body().message;
                // Logs internal reasons, never shows them.
                let _ = e.into_response();
                (
                    status,
                    chrome.map_or_else(bare, |c| *c),
                    if status == StatusCode::NOT_FOUND {
                        "Not found"
                    } else {
                        "Cannot show this"
                    },
                    message,
                    Vec::new(),
                )
            }
            Self::Internal(why) => {
                tracing::error!(reason = %why, "Page failed with an internal error.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    bare(),
                    "Internal error",
                    "Internal error; the server log has the details.".to_owned(),
                    Vec::new(),
                )
            }
        };
        let page = ErrorPage {
            chrome,
            status: status.as_u16(),
            title,
            message,
            roles,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, title.to_owned()).into_response(),
        }
    }
}

/// A 303 to `location` (after a form post).
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}
