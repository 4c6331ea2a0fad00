//! Owns turning a TOML file into a validated [`BrokerConfig`], reporting unknown keys together
//! with invalid values so an operator fixes everything in one pass. Binds nothing.
//!
//! `deny_unknown_fields` stops serde at the first unknown key, so before the strict parse we
//! strip (and record) unknown keys using the field lists serde itself generated for each struct.

use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::config::{
    AuthConfig, BrokerConfig, ConfigErrors, ConfigProblem, LimitsConfig, ListenerConfig,
    MetricsConfig, RuntimeConfig, TlsConfig,
};

/// Why a configuration could not be used. Each variant is a different fix for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file")]
    Io {
        /// The file we tried to read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: io::Error,
    },
    /// The text is not TOML, or a value has the wrong type.
    #[error("config is not valid TOML for dtop-broker")]
    Parse(#[source] toml::de::Error),
    /// The text parsed, but keys are unknown or values are out of range.
    #[error("config is invalid")]
    Invalid(#[source] ConfigErrors),
}

/// Reads, parses and validates the configuration at `path`.
pub fn load_config(path: &Path) -> Result<BrokerConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_config(&text)
}

/// Parses and validates configuration text. Pure: no file system, no sockets.
pub fn parse_config(text: &str) -> Result<BrokerConfig, ConfigError> {
    let mut table: toml::Table = toml::from_str(text).map_err(ConfigError::Parse)?;
    let mut problems = take_unknown_keys(&mut table);

    let config = if problems.is_empty() {
        // Parsing the text (rather than the table) keeps line/column spans in type errors.
        toml::from_str::<BrokerConfig>(text).map_err(ConfigError::Parse)?
    } else {
        match table.try_into::<BrokerConfig>() {
            Ok(config) => config,
            Err(shape) => {
                problems.push(ConfigProblem::new("", shape.message().trim().to_owned()));
                // Non-empty: it holds the unknown keys and the shape problem just pushed.
                return Err(ConfigError::Invalid(ConfigErrors(problems)));
            }
        }
    };

    if let Err(errors) = config.validate() {
        problems.extend(errors.into_problems());
    }
    match ConfigErrors::from_problems(problems) {
        None => Ok(config),
        Some(errors) => Err(ConfigError::Invalid(errors)),
    }
}

/// Removes keys that [`BrokerConfig`] does not know, returning one problem per removed key.
fn take_unknown_keys(table: &mut toml::Table) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let top_fields = struct_fields::<BrokerConfig>();
    table.retain(|key, value| {
        if !top_fields.contains(&key) {
            problems.push(unknown_key(key, top_fields));
            return false;
        }
        // A section of the wrong type (`limits = 5`) is left for the typed parse to report.
        if let (Some(fields), Some(section)) = (section_fields(key), value.as_table_mut()) {
            section.retain(|inner, _| {
                let known = fields.contains(&inner);
                if !known {
                    problems.push(unknown_key(&format!("{key}.{inner}"), fields));
                }
                known
            });
        }
        true
    });
    problems
}

fn unknown_key(key: &str, expected: &[&str]) -> ConfigProblem {
    ConfigProblem::new(
        key,
        format!("unknown key; expected one of: {}", expected.join(", ")),
    )
}

/// The field list of each `[section]` of [`BrokerConfig`]. A unit test checks every top-level
/// field appears here, so a new section cannot silently skip the unknown-key check.
fn section_fields(section: &str) -> Option<&'static [&'static str]> {
    match section {
        "mqtt" | "mqtt_v5" | "websocket" => Some(struct_fields::<ListenerConfig>()),
        "tls" => Some(struct_fields::<TlsConfig>()),
        "metrics" => Some(struct_fields::<MetricsConfig>()),
        "limits" => Some(struct_fields::<LimitsConfig>()),
        "runtime" => Some(struct_fields::<RuntimeConfig>()),
        "auth" => Some(struct_fields::<AuthConfig>()),
        _ => None,
    }
}

/// The field names serde's derive passes to `deserialize_struct` for `T`.
fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("field probe only understands structs"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field probe stops once it has the names"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The probe always returns an error after recording the names; the error carries nothing.
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_keys(error: &ConfigError) -> Vec<String> {
        match error {
            ConfigError::Invalid(errors) => {
                errors.problems().iter().map(|p| p.key.clone()).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn reads_front_threads_and_reports_unknown_runtime_keys_with_bad_values() {
        let config = parse_config("[runtime]\nfront_threads = 2\n").unwrap();
        assert_eq!(config.runtime.front_threads, 2);
        assert_eq!(
            parse_config("").unwrap().runtime.front_threads,
            crate::config::default_front_threads()
        );
        let error = parse_config("[runtime]\nfront_threads = 0\nrouter_threads = 2\n").unwrap_err();
        assert_eq!(
            problem_keys(&error),
            ["runtime.router_threads", "runtime.front_threads"]
        );
    }

    #[test]
    fn every_top_level_field_has_a_known_section() {
        let top = struct_fields::<BrokerConfig>();
        assert_eq!(
            top,
            [
                "mqtt",
                "mqtt_v5",
                "tls",
                "websocket",
                "metrics",
                "limits",
                "runtime",
                "auth"
            ]
        );
        for field in top {
            let inner = section_fields(field).unwrap_or_else(|| panic!("{field} unmapped"));
            assert!(!inner.is_empty(), "{field}");
        }
        assert_eq!(
            struct_fields::<LimitsConfig>(),
            [
                "max_payload_bytes",
                "max_connections",
                "max_inflight_count",
                "connection_timeout_ms",
                "max_queued_messages",
                "max_publish_rate_hz",
                "max_session_expiry_s",
            ]
        );
    }

    #[test]
    fn empty_text_is_the_default_config() {
        assert_eq!(parse_config("").unwrap(), BrokerConfig::default());
    }

    #[test]
    fn reports_unknown_keys_at_every_level_with_invalid_values() {
        let text = r#"
            colour = "blue"
            [limits]
            max_connections = 0
            max_payloads = 5
            [metrics]
            listen = "127.0.0.1:1883"
        "#;
        let error = parse_config(text).unwrap_err();
        assert_eq!(
            problem_keys(&error),
            [
                "colour",
                "limits.max_payloads",
                "metrics.listen",
                "limits.max_connections"
            ]
        );
    }

    #[test]
    fn wrong_type_without_unknown_keys_is_a_parse_error_with_a_location() {
        let error = parse_config("[limits]\nmax_connections = \"many\"\n").unwrap_err();
        let ConfigError::Parse(source) = error else {
            panic!("expected Parse, got {error:?}");
        };
        assert!(source.span().is_some());
    }

    #[test]
    fn wrong_type_next_to_an_unknown_key_reports_both() {
        let error = parse_config("typo = 1\n[limits]\nmax_connections = \"many\"\n").unwrap_err();
        assert_eq!(problem_keys(&error), ["typo", ""]);
    }

    #[test]
    fn broken_toml_is_a_parse_error() {
        assert!(matches!(
            parse_config("[limits\n"),
            Err(ConfigError::Parse(_))
        ));
    }
}
