//! Owns the translation of DTOP's credentials and role rules into a NATS server's
//! `authorization { users = [...] }` block, so that a NATS cluster's MQTT gateway enforces the
//! same rules as `dtop-broker` (issue 16). Pure: values in, text out; knows nothing about
//! files, sockets or NATS processes.
//!
//! NATS keeps users in its own configuration and verifies bcrypt hashes only, so each user's
//! entry carries the bcrypt hash that [`crate::credentials::add_user`] writes beside the
//! argon2id one. Permissions are the role's MQTT topic patterns with `{rig}` and `{username}`
//! expanded for that user, then translated to NATS subjects the way NATS's MQTT gateway maps
//! topics (`/` → `.`, `+` → `*`, `#` → `>`; `a/#` becomes `a` and `a.>`, because NATS's `a.>`
//! does not match `a` itself while MQTT's `a/#` does).

use crate::acl::{Identity, RigScope, RoleRules, RolesConfig};
use crate::credentials::Credentials;
use crate::secret::Secret;

/// Where NATS delivers a QoS 1 MQTT subscription's messages (the JetStream consumer's
/// delivery subject `$MQTT.sub.<nuid>`): a user whose QoS 1 subscriptions should work must
/// be allowed to subscribe here. NATS ignores MQTT SUBSCRIBEs to these subjects, and the
/// generated users may connect over MQTT only, so no user can read another's deliveries.
pub const MQTT_DELIVERY_SUBJECTS: &str = "$MQTT.sub.>";

/// NATS's reserved subject spaces (system events, JetStream API, key-value and object stores,
/// Raft, services). A pattern whose first level is a wildcard does not match `$` topics in
/// DTOP's rules (MQTT §4.7.2), while NATS's `*` and `>` do; these denials keep that true for
/// subscriptions.
pub const RESERVED_SUBSCRIBE_SUBJECTS: [&str; 7] = [
    "$SYS.>", "$JS.>", "$JSC.>", "$KV.>", "$O.>", "$NRG.>", "$SRV.>",
];

/// [`RESERVED_SUBSCRIBE_SUBJECTS`] and NATS's MQTT state (`$MQTT.sess`, `$MQTT.msgs`,
/// retained messages), which no client may publish into.
pub const RESERVED_PUBLISH_SUBJECTS: [&str; 8] = [
    "$SYS.>", "$JS.>", "$JSC.>", "$KV.>", "$O.>", "$NRG.>", "$SRV.>", "$MQTT.>",
];

/// Subjects allowed and denied for one direction. An empty `allow` with `deny = [">"]` is how
/// "nothing" is written: NATS reads an absent allow list as "everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectRules {
    /// Subjects (with NATS wildcards) the user may use.
    pub allow: Vec<String>,
    /// Subjects refused even when `allow` matches (NATS: deny wins).
    pub deny: Vec<String>,
}

/// One user's NATS permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsPermissions {
    /// What the user may publish (including its will message).
    pub publish: SubjectRules,
    /// What the user may subscribe to.
    pub subscribe: SubjectRules,
}

/// One NATS user, generated from one credentials line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUser {
    /// The DTOP user name, also the MQTT user name.
    pub username: String,
    /// The bcrypt hash of the user's password.
    pub password_hash: Secret<String>,
    /// Subjects from the user's role.
    pub permissions: NatsPermissions,
}

/// The generated users, and the names of users left out because they log in with a client
/// certificate only (no password, nothing NATS could check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsAuthorization {
    /// Users in name order.
    pub users: Vec<NatsUser>,
    /// Certificate-only users, not generated.
    pub certificate_only: Vec<String>,
}

/// Translates one MQTT topic filter (no placeholders) into the NATS subjects NATS's MQTT
/// gateway subscribes or publishes to for it. Refuses what the gateway maps in ways that would
/// not match DTOP's topics one to one: empty levels (`a//b`, leading or trailing `/`) and
/// levels holding `.`, `*`, `>` or whitespace.
pub fn filter_to_subjects(filter: &str) -> Result<Vec<String>, String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    let mut tokens = Vec::with_capacity(levels.len());
    for (i, level) in levels.iter().enumerate() {
        let token = match *level {
            "" => {
                return Err(format!(
                    "{filter:?}: empty levels map to special NATS tokens; remove the extra `/`"
                ));
            }
            "#" if i == last => ">",
            "#" => return Err(format!("{filter:?}: `#` must be the last level")),
            "+" => "*",
            other
                if other.contains(['.', '*', '>', '+', '#'])
                    || other.chars().any(char::is_whitespace) =>
            {
                return Err(format!(
                    "{filter:?}: level {other:?} holds a character NATS subjects reserve \
                     (`.`, `*`, `>`, whitespace); rename it"
                ));
            }
            other => other,
        };
        tokens.push(token);
    }
    let subject = tokens.join(".");
    Ok(match levels.as_slice() {
        [.., "#"] if levels.len() > 1 => vec![tokens[..last].join("."), subject],
        _ => vec![subject],
    })
}

/// The MQTT filters `pattern` stands for when `who` uses it: `{rig}` becomes each rig in
/// scope (`+` for every rig), `{username}` the user name. A placeholder with nothing valid to
/// stand for (an empty rig list, a name that is not one plain level) grants nothing, as in
/// [`crate::Acl`].
fn expand(pattern: &str, who: &Identity) -> Vec<String> {
    let mut filters = vec![String::new()];
    for (i, level) in pattern.split('/').enumerate() {
        let choices: Vec<&str> = match level {
            "{rig}" => match &who.rigs {
                RigScope::All => vec!["+"],
                RigScope::Only(rigs) => rigs
                    .iter()
                    .map(String::as_str)
                    .filter(|r| is_plain_level(r))
                    .collect(),
            },
            "{username}" if is_plain_level(&who.username) => vec![who.username.as_str()],
            "{username}" => Vec::new(),
            literal => vec![literal],
        };
        filters = filters
            .iter()
            .flat_map(|prefix| {
                choices.iter().map(move |choice| {
                    if i == 0 {
                        (*choice).to_owned()
                    } else {
                        format!("{prefix}/{choice}")
                    }
                })
            })
            .collect();
    }
    filters
}

fn is_plain_level(value: &str) -> bool {
    !value.is_empty() && !value.contains(['/', '+', '#'])
}

/// Whether the pattern's first level can stand for more than one literal, so that NATS would
/// let it reach `$` subjects that DTOP's rules keep it from.
fn starts_with_wildcard(pattern: &str) -> bool {
    let first = pattern.split('/').next().unwrap_or_default();
    matches!(first, "+" | "#" | "{rig}" | "{username}")
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Translates one direction's patterns; every untranslatable pattern is listed.
fn direction(
    patterns: &[String],
    who: &Identity,
    reserved: &[&str],
    problems: &mut Vec<String>,
) -> SubjectRules {
    let mut rules = SubjectRules::default();
    for pattern in patterns {
        for filter in expand(pattern, who) {
            match filter_to_subjects(&filter) {
                Ok(subjects) => subjects
                    .into_iter()
                    .for_each(|s| push_unique(&mut rules.allow, s)),
                Err(problem) => problems.push(format!("pattern {pattern:?}: {problem}")),
            }
        }
        if starts_with_wildcard(pattern) {
            for subject in reserved {
                push_unique(&mut rules.deny, (*subject).to_owned());
            }
        }
    }
    if rules.allow.is_empty() {
        rules.deny = vec![">".to_owned()];
    }
    rules
}

/// `who`'s NATS permissions under `rules` (its role's). Pure. Every pattern NATS cannot express
/// exactly is listed.
pub fn permissions(rules: &RoleRules, who: &Identity) -> Result<NatsPermissions, Vec<String>> {
    let mut problems = Vec::new();
    let publish = direction(
        &rules.publish,
        who,
        &RESERVED_PUBLISH_SUBJECTS,
        &mut problems,
    );
    let mut subscribe = direction(
        &rules.subscribe,
        who,
        &RESERVED_SUBSCRIBE_SUBJECTS,
        &mut problems,
    );
    if !subscribe.allow.is_empty() {
        push_unique(&mut subscribe.allow, MQTT_DELIVERY_SUBJECTS.to_owned());
    }
    if problems.is_empty() {
        Ok(NatsPermissions { publish, subscribe })
    } else {
        Err(problems)
    }
}

/// Why a user name cannot be written into NATS's configuration as a quoted string.
fn username_problem(username: &str) -> Option<String> {
    username
        .chars()
        .find(|c| matches!(c, '"' | '\\' | '$') || c.is_control())
        .map(|c| format!("user {username:?}: the character {c:?} cannot appear in a NATS user name here; rename the user"))
}

/// The NATS users for every password user in `credentials`, with permissions from `roles`.
/// Every problem (malformed role patterns, users without a NATS hash, names or patterns NATS
/// cannot express) is listed at once.
pub fn authorization(
    credentials: &Credentials,
    roles: &RolesConfig,
) -> Result<NatsAuthorization, Vec<String>> {
    let mut problems: Vec<String> = roles
        .problems()
        .into_iter()
        .map(|(key, message)| format!("{key}: {message}"))
        .collect();
    problems.extend(credentials.placeholder_problems(|role| roles.rules(role).uses_username()));
    let mut users = Vec::new();
    let mut certificate_only = Vec::new();
    for (username, entry) in credentials.users() {
        if entry.hash.is_none() {
            certificate_only.push(username.to_owned());
            continue;
        }
        let Some(password_hash) = entry.nats_hash.clone() else {
            problems.push(format!(
                "user {username:?} has no NATS (bcrypt) hash: the credentials line predates \
                 NATS support; set its password again with `dtop-broker passwd add`"
            ));
            continue;
        };
        if let Some(problem) = username_problem(username) {
            problems.push(problem);
            continue;
        }
        let Some(who) = credentials.identity(username) else {
            continue;
        };
        match permissions(roles.rules(entry.role), &who) {
            Ok(permissions) => users.push(NatsUser {
                username: username.to_owned(),
                password_hash,
                permissions,
            }),
            Err(user_problems) => problems.extend(
                user_problems
                    .into_iter()
                    .map(|p| format!("user {username:?} (role {}): {p}", entry.role)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(NatsAuthorization {
            users,
            certificate_only,
        })
    } else {
        Err(problems)
    }
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

fn render_rules(rules: &SubjectRules) -> String {
    let mut parts = Vec::new();
    if !rules.allow.is_empty() {
        parts.push(format!("allow: {}", quoted_list(&rules.allow)));
    }
    if !rules.deny.is_empty() {
        parts.push(format!("deny: {}", quoted_list(&rules.deny)));
    }
    format!("{{ {} }}", parts.join(", "))
}

impl NatsAuthorization {
    /// The NATS configuration text: an `authorization` block to `include` in every node's
    /// configuration. Users may connect over MQTT only, so that the `$MQTT.sub.>` right is
    /// usable by NATS's gateway alone. Holds password hashes: write it readable by the NATS
    /// server's user only.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Generated by `dtop nats-config` from DTOP's credentials file and role rules.\n\
             # Do not edit: change the credentials or the rules and generate it again.\n\
             authorization {\n  users = [\n",
        );
        for user in &self.users {
            text.push_str(&format!(
                "    {{\n      user: \"{}\"\n      password: \"{}\"\n      \
                 allowed_connection_types: [\"MQTT\"]\n      permissions: {{\n        \
                 publish: {}\n        subscribe: {}\n      }}\n    }}\n",
                user.username,
                user.password_hash.expose(),
                render_rules(&user.permissions.publish),
                render_rules(&user.permissions.subscribe),
            ));
        }
        text.push_str("  ]\n}\n");
        text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::acl::Role;

    fn who(role: Role, username: &str, rigs: RigScope) -> Identity {
        Identity {
            username: username.to_owned(),
            role,
            rigs,
        }
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn translates_levels_and_wildcards_the_way_the_nats_mqtt_gateway_does() {
        assert_eq!(
            filter_to_subjects("dtop/v1/rig/r1/samples").unwrap(),
            ["dtop.v1.rig.r1.samples"]
        );
        assert_eq!(
            filter_to_subjects("dtop/v1/rig/+/drive").unwrap(),
            ["dtop.v1.rig.*.drive"]
        );
        // MQTT's `a/#` also matches `a`; NATS's `a.>` does not, so both are granted.
        assert_eq!(
            filter_to_subjects("dtop/v1/twin/#").unwrap(),
            ["dtop.v1.twin", "dtop.v1.twin.>"]
        );
        assert_eq!(filter_to_subjects("#").unwrap(), [">"]);
        assert_eq!(filter_to_subjects("+").unwrap(), ["*"]);
    }

    #[test]
    fn refuses_filters_nats_would_map_to_other_subjects() {
        for bad in ["/a", "a/", "a//b", "a/b.c", "a/#/b", "a/b c", "a/x>"] {
            let problem = filter_to_subjects(bad).unwrap_err();
            assert!(problem.contains(&format!("{bad:?}")), "{problem}");
        }
    }

    #[test]
    fn a_rig_gets_exactly_its_own_topics() {
        let rules = crate::acl::default_rig_rules();
        let p = permissions(
            &rules,
            &who(Role::Rig, "r1", RigScope::Only(strings(&["r1"]))),
        )
        .unwrap();
        assert_eq!(
            p.publish.allow,
            strings(&[
                "dtop.v1.rig.r1.birth",
                "dtop.v1.rig.r1.death",
                "dtop.v1.rig.r1.samples",
                "dtop.v1.rig.r1.status",
                "dtop.v1.rig.r1.cmd.ack",
                "dtop.v1.rig.r1.loss",
            ])
        );
        assert!(p.publish.deny.is_empty());
        assert_eq!(
            p.subscribe.allow,
            strings(&[
                "dtop.v1.rig.r1.cmd",
                "dtop.v1.rig.r1.drive",
                "dtop.v1.rig.r1.persisted",
                "dtop.v1.rig.r1.controller",
                MQTT_DELIVERY_SUBJECTS,
            ])
        );
    }

    #[test]
    fn an_operator_scope_expands_to_one_subject_per_rig_and_all_rigs_to_a_wildcard() {
        let rules = crate::acl::default_operator_rules();
        let two = permissions(
            &rules,
            &who(Role::Operator, "op", RigScope::Only(strings(&["a", "b"]))),
        )
        .unwrap();
        assert_eq!(
            two.publish.allow,
            strings(&["dtop.v1.rig.a.cmd", "dtop.v1.rig.b.cmd"])
        );
        assert!(two.subscribe.allow.contains(&"dtop.v1.rig.b".to_owned()));
        assert!(two.subscribe.allow.contains(&"dtop.v1.rig.b.>".to_owned()));
        assert!(two.subscribe.allow.contains(&"dtop.v1.twin.a.>".to_owned()));
        let all = permissions(&rules, &who(Role::Operator, "op", RigScope::All)).unwrap();
        assert_eq!(all.publish.allow, strings(&["dtop.v1.rig.*.cmd"]));
        // An empty scope grants nothing through `{rig}`: only the unscoped study and model
        // topics remain, and publishing nothing is written as an explicit deny.
        let none = permissions(
            &rules,
            &who(Role::Operator, "op", RigScope::Only(Vec::new())),
        )
        .unwrap();
        assert_eq!(none.publish.allow, Vec::<String>::new());
        assert_eq!(none.publish.deny, strings(&[">"]));
        assert_eq!(
            none.subscribe.allow,
            strings(&[
                "dtop.v1.studies",
                "dtop.v1.studies.>",
                "dtop.v1.models",
                "dtop.v1.models.>",
                MQTT_DELIVERY_SUBJECTS,
            ])
        );
    }

    #[test]
    fn a_dashboard_publishes_nothing_and_an_admin_is_kept_out_of_reserved_subjects() {
        let dash = permissions(
            &crate::acl::default_dashboard_rules(),
            &who(Role::Dashboard, "wall", RigScope::All),
        )
        .unwrap();
        assert!(dash.publish.allow.is_empty());
        assert_eq!(dash.publish.deny, strings(&[">"]));
        let admin = permissions(
            &crate::acl::default_admin_rules(),
            &who(Role::Admin, "root", RigScope::All),
        )
        .unwrap();
        assert_eq!(admin.publish.allow, strings(&[">"]));
        assert_eq!(admin.publish.deny, strings(&RESERVED_PUBLISH_SUBJECTS));
        assert_eq!(
            admin.subscribe.allow,
            strings(&[">", MQTT_DELIVERY_SUBJECTS])
        );
        assert_eq!(admin.subscribe.deny, strings(&RESERVED_SUBSCRIBE_SUBJECTS));
        // The delivery subjects stay subscribable for QoS 1 under the admin's denials.
        assert!(!admin.subscribe.deny.iter().any(|d| d.starts_with("$MQTT")));
    }

    #[test]
    fn username_placeholders_take_the_name_and_refuse_names_that_are_not_one_level() {
        let rules = RoleRules {
            publish: strings(&["home/{username}/#"]),
            subscribe: Vec::new(),
        };
        let bob = permissions(&rules, &who(Role::Dashboard, "bob", RigScope::All)).unwrap();
        assert_eq!(bob.publish.allow, strings(&["home.bob", "home.bob.>"]));
        assert_eq!(bob.subscribe.deny, strings(&[">"]));
        let sneaky = permissions(&rules, &who(Role::Dashboard, "+", RigScope::All)).unwrap();
        assert_eq!(sneaky.publish.deny, strings(&[">"]));
    }

    fn credentials_with(lines: &str) -> Credentials {
        Credentials::parse(lines).unwrap()
    }

    const ARGON: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHRvcC1kZWNveS1zYWx0$mOCvGpF3sTbFNt1W1Gp2S8fEu8D0vNVjmCLzjCTBK/I";

    /// A real bcrypt hash at bcrypt's lowest cost (fast; the cost does not matter here).
    fn bcrypt_hash() -> String {
        bcrypt::hash("pw", 4).unwrap()
    }

    #[test]
    fn generates_every_password_user_and_leaves_out_certificate_only_ones() {
        let bcrypt = bcrypt_hash();
        let creds = credentials_with(&format!(
            "r1:rig:-:{ARGON}:{bcrypt}\nroot:admin:*:{ARGON}:{bcrypt}\nedge:rig:-:-\n"
        ));
        let auth = authorization(&creds, &RolesConfig::default()).unwrap();
        let names: Vec<&str> = auth.users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["r1", "root"]);
        assert_eq!(auth.certificate_only, ["edge"]);
        let text = auth.render();
        assert!(text.contains("user: \"r1\""), "{text}");
        assert!(text.contains(&format!("password: \"{bcrypt}\"")), "{text}");
        assert!(
            !text.contains("argon2"),
            "only the bcrypt hash goes to NATS"
        );
        assert_eq!(
            text.matches("allowed_connection_types: [\"MQTT\"]").count(),
            2
        );
        assert!(
            text.contains("publish: { allow: [\"dtop.v1.rig.r1.birth\", \"dtop.v1.rig.r1.death\"")
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bcrypt = bcrypt_hash();
        let creds = credentials_with(&format!(
            "old:operator:*:{ARGON}\nq\"uote:dashboard:*:{ARGON}:{bcrypt}\nok:dashboard:*:{ARGON}:{bcrypt}\n"
        ));
        let mut roles = RolesConfig::default();
        roles.dashboard.subscribe.push("dtop/v1/a.b".to_owned());
        roles.rig.publish.push("a/#/b".to_owned());
        let problems = authorization(&creds, &roles).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        // In file order of kind: role rules first, then users by name.
        assert!(
            problems[0].starts_with("auth.roles.rig.publish"),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("user \"ok\"") && problems[1].contains("a.b"),
            "{problems:#?}"
        );
        assert!(problems[2].contains("\"old\" has no NATS"), "{problems:#?}");
        assert!(problems[3].contains("cannot appear"), "{problems:#?}");
    }
}
