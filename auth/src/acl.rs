//! Owns authorization decisions: roles, their topic patterns with `{rig}`/`{username}`
//! substitution, and the pure "may this identity publish/subscribe here" checks. Default deny.
//! Knows nothing about sockets, MQTT packets or password hashes.
//!
//! A pattern is an MQTT topic filter whose whole levels may also be `{rig}` (any rig in the
//! identity's scope) or `{username}`. A publish is allowed when its topic matches a publish
//! pattern. A subscription is allowed only when *every* topic its filter can match is covered
//! by one subscribe pattern, so `dtop/v1/rig/+/cmd` is refused to a rig that may read only its
//! own `cmd`: the broker never has to filter per message, and nothing leaks.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a user is for. Each role has its own publish and subscribe patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An edge daemon: publishes only its own rig's topics, reads its own
    /// cmd/drive/persisted/controller.
    Rig,
    /// The twin service: reads all rig telemetry, writes drive, persisted, controller and twin
    /// topics.
    Twin,
    /// A person or tool commanding the rigs it is allowed.
    Operator,
    /// Read-only views of twin and telemetry topics.
    Dashboard,
    /// A person running studies: reads twin state, telemetry and studies; commands nothing.
    Researcher,
    /// The API server's own MQTT user: the only non-admin that publishes study topics.
    Server,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in documentation order.
    pub const ALL: [Role; 7] = [
        Role::Rig,
        Role::Twin,
        Role::Operator,
        Role::Dashboard,
        Role::Researcher,
        Role::Server,
        Role::Admin,
    ];

    /// The name used in config and credentials files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Rig => "rig",
            Role::Twin => "twin",
            Role::Operator => "operator",
            Role::Dashboard => "dashboard",
            Role::Researcher => "researcher",
            Role::Server => "server",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which rigs `{rig}` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RigScope {
    /// Any rig (`*` in the credentials file): `{rig}` acts like `+`.
    All,
    /// Exactly these rig ids; empty means `{rig}` patterns grant nothing.
    Only(Vec<String>),
}

/// Who is asking: established at CONNECT from credentials or a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The authenticated user name (substituted for `{username}`).
    pub username: String,
    /// Selects the rule set.
    pub role: Role,
    /// Substituted for `{rig}`.
    pub rigs: RigScope,
}

/// Publish and subscribe patterns of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRules {
    /// Topic patterns this role may publish to (including its will message).
    pub publish: Vec<String>,
    /// Topic patterns this role may subscribe to; a filter must fall entirely inside one.
    pub subscribe: Vec<String>,
}

impl RoleRules {
    /// Whether any pattern substitutes the user name (`{username}` as a level).
    pub fn uses_username(&self) -> bool {
        self.publish
            .iter()
            .chain(&self.subscribe)
            .any(|p| p.split('/').any(|level| level == "{username}"))
    }
}

/// The rules of every role. Absent roles in the TOML keep DTOP's built-in rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesConfig {
    /// Edge daemons.
    #[serde(default = "default_rig_rules")]
    pub rig: RoleRules,
    /// Twin services.
    #[serde(default = "default_twin_rules")]
    pub twin: RoleRules,
    /// Operators.
    #[serde(default = "default_operator_rules")]
    pub operator: RoleRules,
    /// Dashboards.
    #[serde(default = "default_dashboard_rules")]
    pub dashboard: RoleRules,
    /// Researchers.
    #[serde(default = "default_researcher_rules")]
    pub researcher: RoleRules,
    /// The API server.
    #[serde(default = "default_server_rules")]
    pub server: RoleRules,
    /// Administrators.
    #[serde(default = "default_admin_rules")]
    pub admin: RoleRules,
}

impl Default for RolesConfig {
    fn default() -> Self {
        Self {
            rig: default_rig_rules(),
            twin: default_twin_rules(),
            operator: default_operator_rules(),
            dashboard: default_dashboard_rules(),
            researcher: default_researcher_rules(),
            server: default_server_rules(),
            admin: default_admin_rules(),
        }
    }
}

impl RolesConfig {
    /// The rules of `role`.
    pub fn rules(&self, role: Role) -> &RoleRules {
        match role {
            Role::Rig => &self.rig,
            Role::Twin => &self.twin,
            Role::Operator => &self.operator,
            Role::Dashboard => &self.dashboard,
            Role::Researcher => &self.researcher,
            Role::Server => &self.server,
            Role::Admin => &self.admin,
        }
    }

    /// Every malformed pattern as `(key, message)`, e.g. `("roles.rig.publish", "...")`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for role in Role::ALL {
            let rules = self.rules(role);
            for (kind, patterns) in [("publish", &rules.publish), ("subscribe", &rules.subscribe)] {
                for pattern in patterns {
                    if let Err(message) = Pattern::parse(pattern) {
                        problems.push((format!("auth.roles.{role}.{kind}"), message));
                    }
                }
            }
        }
        problems
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Rig topics an edge publishes (`dtop_proto::topic::RigTopic`): birth, death, samples, status,
/// cmd/ack, loss. It reads the topics addressed to it: cmd, drive, persisted, controller.
pub fn default_rig_rules() -> RoleRules {
    RoleRules {
        publish: strings(&[
            "dtop/v1/rig/{rig}/birth",
            "dtop/v1/rig/{rig}/death",
            "dtop/v1/rig/{rig}/samples",
            "dtop/v1/rig/{rig}/status",
            "dtop/v1/rig/{rig}/cmd/ack",
            "dtop/v1/rig/{rig}/loss",
        ]),
        subscribe: strings(&[
            "dtop/v1/rig/{rig}/cmd",
            "dtop/v1/rig/{rig}/drive",
            "dtop/v1/rig/{rig}/persisted",
            "dtop/v1/rig/{rig}/controller",
        ]),
    }
}

/// The twin reads every rig topic (telemetry, and `cmd` for `SetControl`), simulation
/// requests and the catalogue's latest usable models (to adopt an approved one); it writes drive, persisted, controller, cmd/ack (for commands it handles), twin
/// state and simulation results.
pub fn default_twin_rules() -> RoleRules {
    RoleRules {
        publish: strings(&[
            "dtop/v1/rig/+/drive",
            "dtop/v1/rig/+/persisted",
            "dtop/v1/rig/+/controller",
            "dtop/v1/rig/+/cmd/ack",
            "dtop/v1/twin/#",
            "dtop/v1/sim/+/result",
        ]),
        subscribe: strings(&["dtop/v1/rig/#", "dtop/v1/sim/+/request", MODELS_TOPICS]),
    }
}

/// Where the API server publishes each study's state and progress (`{id}/state`,
/// `{id}/progress`).
pub const STUDIES_TOPICS: &str = "dtop/v1/studies/#";

/// Where the API server publishes each catalogue model's latest usable version
/// (`{name}/latest`, retained): what a twin following that model adopts.
pub const MODELS_TOPICS: &str = "dtop/v1/models/#";

/// Operators command their rigs and read everything about them, and every study.
pub fn default_operator_rules() -> RoleRules {
    RoleRules {
        publish: strings(&["dtop/v1/rig/{rig}/cmd"]),
        subscribe: strings(&[
            "dtop/v1/rig/{rig}/#",
            "dtop/v1/twin/{rig}/#",
            STUDIES_TOPICS,
            MODELS_TOPICS,
        ]),
    }
}

/// Dashboards read twin state, rig telemetry and studies, and write nothing.
pub fn default_dashboard_rules() -> RoleRules {
    RoleRules {
        publish: Vec::new(),
        subscribe: strings(&[
            "dtop/v1/twin/#",
            "dtop/v1/rig/+/birth",
            "dtop/v1/rig/+/death",
            "dtop/v1/rig/+/samples",
            "dtop/v1/rig/+/status",
            STUDIES_TOPICS,
            MODELS_TOPICS,
        ]),
    }
}

/// Researchers read what a dashboard reads (twin state, rig telemetry, studies) and write
/// nothing on MQTT: no rig command, no drive. Their studies go through the HTTP API.
pub fn default_researcher_rules() -> RoleRules {
    default_dashboard_rules()
}

/// The API server publishes study state and progress. It is also the web users' gateway to
/// the rigs: it reads every rig's birth, death, samples, status and command answers and every
/// twin's state and status, and publishes rig commands. It applies each web user's *own*
/// rules (this file) before it forwards a sample to them or a command from them, so these
/// rights never reach a user who lacks them.
pub fn default_server_rules() -> RoleRules {
    RoleRules {
        publish: strings(&[STUDIES_TOPICS, MODELS_TOPICS, "dtop/v1/rig/+/cmd"]),
        subscribe: strings(&[
            "dtop/v1/rig/+/birth",
            "dtop/v1/rig/+/death",
            "dtop/v1/rig/+/samples",
            "dtop/v1/rig/+/status",
            "dtop/v1/rig/+/cmd/ack",
            "dtop/v1/twin/+/state",
            "dtop/v1/twin/+/status",
            "dtop/v1/twin/+/cbc",
        ]),
    }
}

/// Administrators may do anything.
pub fn default_admin_rules() -> RoleRules {
    RoleRules {
        publish: strings(&["#"]),
        subscribe: strings(&["#"]),
    }
}

/// One level of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`
    Single,
    /// `#`, always last.
    Multi,
    /// `{rig}`
    Rig,
    /// `{username}`
    Username,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Level>);

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("empty pattern".to_owned());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i == last => Level::Multi,
                "#" => return Err(format!("{text:?}: `#` must be the last level")),
                "+" => Level::Single,
                "{rig}" => Level::Rig,
                "{username}" => Level::Username,
                other if other.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "{text:?}: wildcards and placeholders must fill a whole level"
                    ));
                }
                other => Level::Literal(other.to_owned()),
            };
            levels.push(level);
        }
        Ok(Self(levels))
    }
}

/// A value substituted for a placeholder must be one plain level.
fn is_plain_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#'])
}

/// Whether the concrete topic level `level` satisfies pattern level `pattern` for `who`.
fn level_matches(pattern: &Level, level: &str, who: &Identity) -> bool {
    match pattern {
        Level::Literal(lit) => lit == level,
        Level::Single | Level::Multi => true,
        Level::Username => is_plain_level(&who.username) && who.username == level,
        Level::Rig => match &who.rigs {
            RigScope::All => true,
            RigScope::Only(rigs) => rigs.iter().any(|r| r == level && is_plain_level(r)),
        },
    }
}

/// Whether filter level `level` (which may be `+`) only ever matches levels `pattern` allows.
fn level_covers(pattern: &Level, level: &str, who: &Identity) -> bool {
    match pattern {
        Level::Single | Level::Multi => level != "#",
        Level::Rig if who.rigs == RigScope::All => level != "#",
        _ => level != "+" && level != "#" && level_matches(pattern, level, who),
    }
}

fn topic_matches(pattern: &Pattern, topic: &str, who: &Identity) -> bool {
    let mut levels = topic.split('/');
    for (i, p) in pattern.0.iter().enumerate() {
        if *p == Level::Multi {
            // MQTT §4.7.2: wildcards at the first level never match `$` topics.
            return !(i == 0 && topic.starts_with('$'));
        }
        let Some(level) = levels.next() else {
            return false;
        };
        if i == 0 && level.starts_with('$') && !matches!(p, Level::Literal(_)) {
            return false;
        }
        if !level_matches(p, level, who) {
            return false;
        }
    }
    levels.next().is_none()
}

fn filter_covered(pattern: &Pattern, filter: &str, who: &Identity) -> bool {
    let mut levels = filter.split('/').peekable();
    for (i, p) in pattern.0.iter().enumerate() {
        if *p == Level::Multi {
            return !(i == 0 && filter.starts_with('$'));
        }
        let Some(level) = levels.next() else {
            return false;
        };
        if level == "#" {
            // `a/#` also matches `a` itself; only a pattern `#` at this level covers that.
            return false;
        }
        if i == 0 && level.starts_with('$') && !matches!(p, Level::Literal(_)) {
            return false;
        }
        if !level_covers(p, level, who) {
            return false;
        }
    }
    levels.peek().is_none()
}

/// Strips `$share/{group}/` from a shared subscription filter (MQTT 5 §4.8.2).
pub fn unshared(filter: &str) -> &str {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, inner)| inner)
}

/// Whether `topic` is a valid topic *name* (no wildcards, non-empty, MQTT §4.7.3).
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` is a valid topic filter (MQTT §4.7.1), shared or not.
pub fn is_valid_filter(filter: &str) -> bool {
    let inner = if let Some(rest) = filter.strip_prefix("$share/") {
        match rest.split_once('/') {
            Some((group, inner)) if !group.is_empty() && !group.contains(['+', '#']) => inner,
            _ => return false,
        }
    } else {
        filter
    };
    if inner.is_empty() || inner.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = inner.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "#" => i == last,
        "+" => true,
        other => !other.contains(['+', '#']),
    })
}

/// The compiled rules of every role: the pure authorization engine.
#[derive(Debug, Clone)]
pub struct Acl {
    /// `(publish, subscribe)` patterns, indexed like [`Role::ALL`].
    compiled: Vec<(Vec<Pattern>, Vec<Pattern>)>,
}

impl Acl {
    /// Compiles `roles`. Malformed patterns (see [`RolesConfig::problems`]) grant nothing.
    pub fn new(roles: &RolesConfig) -> Self {
        let compile = |patterns: &[String]| -> Vec<Pattern> {
            patterns
                .iter()
                .filter_map(|p| Pattern::parse(p).ok())
                .collect()
        };
        let compiled = Role::ALL
            .iter()
            .map(|role| {
                let rules = roles.rules(*role);
                (compile(&rules.publish), compile(&rules.subscribe))
            })
            .collect();
        Self { compiled }
    }

    fn role_rules(&self, role: Role) -> &(Vec<Pattern>, Vec<Pattern>) {
        let index = Role::ALL.iter().position(|r| *r == role).unwrap_or(0);
        &self.compiled[index]
    }

    /// Whether `who` may publish to `topic` (also used for will messages).
    pub fn may_publish(&self, who: &Identity, topic: &str) -> bool {
        is_valid_topic_name(topic)
            && self
                .role_rules(who.role)
                .0
                .iter()
                .any(|p| topic_matches(p, topic, who))
    }

    /// Whether `who` may subscribe to `filter` (`$share/{group}/` is ignored for the check).
    pub fn may_subscribe(&self, who: &Identity, filter: &str) -> bool {
        let inner = unshared(filter);
        is_valid_filter(filter)
            && self
                .role_rules(who.role)
                .1
                .iter()
                .any(|p| filter_covered(p, inner, who))
    }
}

/// Something a user asks the HTTP API to do. The topic rules above decide MQTT; this decides
/// the API, from the same roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List and read studies, their events, results and arrays; list study kinds.
    ReadStudies,
    /// Submit a study.
    SubmitStudy,
    /// Cancel a study one submitted oneself.
    CancelOwnStudy,
    /// Cancel anyone's study.
    CancelAnyStudy,
    /// List and read catalogue models.
    ReadModels,
    /// Add a model version to the catalogue.
    AddModel,
    /// Approve or reject a model version a study proposed (the twin may then adopt it).
    ReviewModel,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 7] = [
        Action::ReadStudies,
        Action::SubmitStudy,
        Action::CancelOwnStudy,
        Action::CancelAnyStudy,
        Action::ReadModels,
        Action::AddModel,
        Action::ReviewModel,
    ];
}

/// Whether `who` may do `action` on the HTTP API. Default deny: rigs and the server's MQTT
/// user may do nothing; the twin may read models (to simulate the catalogue's); dashboards
/// read; researchers submit, read, cancel their own and add models; operators may also cancel
/// anyone's study and approve or reject the model versions studies propose (they run the lab,
/// and an approved version is what the twin runs on); admins may do everything. Rig scope does
/// not apply: studies run on models, not on rigs.
pub fn allowed(who: &Identity, action: Action) -> bool {
    use Action::*;
    match who.role {
        Role::Admin => true,
        Role::Operator => true,
        Role::Researcher => !matches!(action, CancelAnyStudy | ReviewModel),
        Role::Dashboard => matches!(action, ReadStudies | ReadModels),
        Role::Twin => matches!(action, ReadModels),
        Role::Rig | Role::Server => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, username: &str, rigs: RigScope) -> Identity {
        Identity {
            username: username.to_owned(),
            role,
            rigs,
        }
    }

    fn rig(name: &str) -> Identity {
        who(Role::Rig, name, RigScope::Only(vec![name.to_owned()]))
    }

    #[test]
    fn built_in_rules_are_well_formed() {
        assert_eq!(RolesConfig::default().problems(), Vec::new());
    }

    #[test]
    fn refuses_malformed_patterns_with_their_key() {
        let mut roles = RolesConfig::default();
        roles.dashboard.subscribe.push("a/#/b".to_owned());
        roles.rig.publish.push("a/x{rig}".to_owned());
        let keys: Vec<String> = roles.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            ["auth.roles.rig.publish", "auth.roles.dashboard.subscribe"]
        );
    }

    #[test]
    fn rig_publishes_only_its_own_telemetry() {
        let acl = Acl::new(&RolesConfig::default());
        let r1 = rig("r1");
        assert!(acl.may_publish(&r1, "dtop/v1/rig/r1/samples"));
        assert!(acl.may_publish(&r1, "dtop/v1/rig/r1/cmd/ack"));
        assert!(!acl.may_publish(&r1, "dtop/v1/rig/r2/samples"));
        assert!(!acl.may_publish(&r1, "dtop/v1/rig/r1/cmd"));
        assert!(!acl.may_publish(&r1, "dtop/v1/rig/r1/drive"));
        assert!(!acl.may_publish(&r1, "dtop/v1/rig/+/samples"));
    }

    #[test]
    fn refuses_subscribe_to_foreign_rig_cmd_even_through_wildcards() {
        let acl = Acl::new(&RolesConfig::default());
        let r1 = rig("r1");
        assert!(acl.may_subscribe(&r1, "dtop/v1/rig/r1/cmd"));
        assert!(!acl.may_subscribe(&r1, "dtop/v1/rig/r2/cmd"));
        assert!(!acl.may_subscribe(&r1, "dtop/v1/rig/+/cmd"));
        assert!(!acl.may_subscribe(&r1, "dtop/v1/rig/r1/#"));
        assert!(!acl.may_subscribe(&r1, "#"));
        assert!(!acl.may_subscribe(&r1, "$share/g/dtop/v1/rig/r2/cmd"));
        assert!(acl.may_subscribe(&r1, "$share/g/dtop/v1/rig/r1/cmd"));
    }

    #[test]
    fn operator_scope_limits_cmd_and_reads() {
        let acl = Acl::new(&RolesConfig::default());
        let op = who(
            Role::Operator,
            "alice",
            RigScope::Only(vec!["r1".into(), "r2".into()]),
        );
        assert!(acl.may_publish(&op, "dtop/v1/rig/r2/cmd"));
        assert!(!acl.may_publish(&op, "dtop/v1/rig/r3/cmd"));
        assert!(acl.may_subscribe(&op, "dtop/v1/rig/r1/#"));
        assert!(acl.may_subscribe(&op, "dtop/v1/twin/r2/state"));
        assert!(!acl.may_subscribe(&op, "dtop/v1/rig/+/samples"));
        let all = who(Role::Operator, "root-op", RigScope::All);
        assert!(acl.may_subscribe(&all, "dtop/v1/rig/+/samples"));
        assert!(acl.may_publish(&all, "dtop/v1/rig/anything/cmd"));
        assert!(!acl.may_subscribe(&all, "dtop/v1/#"));
    }

    #[test]
    fn dashboard_reads_but_never_writes() {
        let acl = Acl::new(&RolesConfig::default());
        let d = who(Role::Dashboard, "wall", RigScope::All);
        assert!(acl.may_subscribe(&d, "dtop/v1/twin/+/state/json"));
        assert!(acl.may_subscribe(&d, "dtop/v1/rig/+/samples"));
        assert!(!acl.may_subscribe(&d, "dtop/v1/rig/+/cmd"));
        assert!(!acl.may_publish(&d, "dtop/v1/twin/r1/state"));
    }

    #[test]
    fn username_placeholder_substitutes_a_single_level_only() {
        let roles = RolesConfig {
            dashboard: RoleRules {
                publish: vec!["home/{username}/#".to_owned()],
                subscribe: Vec::new(),
            },
            ..RolesConfig::default()
        };
        let acl = Acl::new(&roles);
        let ok = who(Role::Dashboard, "bob", RigScope::All);
        assert!(acl.may_publish(&ok, "home/bob/x"));
        assert!(!acl.may_publish(&ok, "home/eve/x"));
        let sneaky = who(Role::Dashboard, "+", RigScope::All);
        assert!(!acl.may_publish(&sneaky, "home/+/x"));
        assert!(!acl.may_publish(&sneaky, "home/bob/x"));
    }

    #[test]
    fn admin_hash_does_not_match_dollar_topics_but_matches_everything_else() {
        let acl = Acl::new(&RolesConfig::default());
        let admin = who(Role::Admin, "root", RigScope::All);
        assert!(acl.may_publish(&admin, "a/b"));
        assert!(acl.may_subscribe(&admin, "#"));
        assert!(!acl.may_publish(&admin, "$SYS/x"));
    }

    #[test]
    fn http_permissions_follow_the_role_table() {
        use Action::*;
        // One row per role: the actions it may take; every other action is refused.
        let table: [(Role, &[Action]); 7] = [
            (Role::Rig, &[]),
            (Role::Twin, &[ReadModels]),
            (Role::Operator, &Action::ALL),
            (Role::Dashboard, &[ReadStudies, ReadModels]),
            (
                Role::Researcher,
                &[
                    ReadStudies,
                    SubmitStudy,
                    CancelOwnStudy,
                    ReadModels,
                    AddModel,
                ],
            ),
            (Role::Server, &[]),
            (Role::Admin, &Action::ALL),
        ];
        for (role, may) in table {
            let id = who(role, "u", RigScope::All);
            for action in Action::ALL {
                assert_eq!(
                    allowed(&id, action),
                    may.contains(&action),
                    "{role} {action:?}"
                );
            }
        }
    }

    #[test]
    fn researcher_reads_twin_telemetry_and_studies_but_commands_nothing() {
        let acl = Acl::new(&RolesConfig::default());
        let r = who(Role::Researcher, "ada", RigScope::All);
        assert!(acl.may_subscribe(&r, "dtop/v1/twin/+/state/json"));
        assert!(acl.may_subscribe(&r, "dtop/v1/rig/+/samples"));
        assert!(acl.may_subscribe(&r, "dtop/v1/studies/#"));
        assert!(!acl.may_subscribe(&r, "dtop/v1/rig/+/cmd"));
        assert!(!acl.may_subscribe(&r, "dtop/v1/rig/+/drive"));
        assert!(!acl.may_publish(&r, "dtop/v1/rig/r1/cmd"));
        assert!(!acl.may_publish(&r, "dtop/v1/rig/r1/drive"));
        assert!(!acl.may_publish(&r, "dtop/v1/studies/st_1/state"));
    }

    #[test]
    fn only_the_server_and_admins_publish_models_and_twins_follow_them() {
        let acl = Acl::new(&RolesConfig::default());
        for role in Role::ALL {
            let id = who(role, "u", RigScope::All);
            let may = acl.may_publish(&id, "dtop/v1/models/southampton/latest");
            assert_eq!(may, matches!(role, Role::Server | Role::Admin), "{role}");
        }
        for role in [
            Role::Twin,
            Role::Operator,
            Role::Dashboard,
            Role::Researcher,
        ] {
            let id = who(role, "u", RigScope::All);
            assert!(acl.may_subscribe(&id, "dtop/v1/models/+/latest"), "{role}");
        }
        let rig = rig("r1");
        assert!(!acl.may_subscribe(&rig, "dtop/v1/models/+/latest"));
    }

    #[test]
    fn only_the_server_and_admins_publish_study_topics() {
        let acl = Acl::new(&RolesConfig::default());
        for role in Role::ALL {
            let id = who(role, "u", RigScope::All);
            let may = acl.may_publish(&id, "dtop/v1/studies/st_1/state");
            assert_eq!(may, matches!(role, Role::Server | Role::Admin), "{role}");
        }
        let server = who(Role::Server, "api", RigScope::All);
        assert!(!acl.may_subscribe(&server, "dtop/v1/studies/#"));
        for role in [Role::Operator, Role::Dashboard, Role::Admin] {
            let id = who(role, "u", RigScope::All);
            assert!(acl.may_subscribe(&id, "dtop/v1/studies/+/state"), "{role}");
        }
    }

    #[test]
    fn the_server_reads_live_rig_topics_and_sends_commands_but_nothing_else() {
        let acl = Acl::new(&RolesConfig::default());
        let server = who(Role::Server, "api", RigScope::All);
        for filter in [
            "dtop/v1/rig/+/birth",
            "dtop/v1/rig/+/death",
            "dtop/v1/rig/+/samples",
            "dtop/v1/rig/+/status",
            "dtop/v1/rig/+/cmd/ack",
            "dtop/v1/twin/+/state",
            "dtop/v1/twin/+/status",
            "dtop/v1/twin/+/cbc",
        ] {
            assert!(acl.may_subscribe(&server, filter), "{filter}");
        }
        assert!(acl.may_publish(&server, "dtop/v1/rig/r1/cmd"));
        assert!(!acl.may_subscribe(&server, "dtop/v1/rig/+/cmd"));
        assert!(!acl.may_subscribe(&server, "dtop/v1/rig/#"));
        assert!(!acl.may_publish(&server, "dtop/v1/rig/r1/drive"));
        assert!(!acl.may_publish(&server, "dtop/v1/rig/r1/controller"));
        assert!(!acl.may_publish(&server, "dtop/v1/twin/r1/state"));
    }

    #[test]
    fn validates_filters_and_topic_names() {
        assert!(is_valid_filter("a/+/#"));
        assert!(is_valid_filter("$share/g/a/#"));
        assert!(!is_valid_filter("a/#/b"));
        assert!(!is_valid_filter("a+/b"));
        assert!(!is_valid_filter("$share//a"));
        assert!(!is_valid_filter(""));
        assert!(is_valid_topic_name("a/b"));
        assert!(!is_valid_topic_name("a/+"));
        assert_eq!(unshared("$share/g/a/b"), "a/b");
        assert_eq!(unshared("a/b"), "a/b");
    }
}
