//! Owns model adoption's pure core: reading a catalogue model's latest usable version from
//! `dtop/v1/models/{name}/latest` (refusing what must never be applied), one rig's adoption
//! state (which version it follows, runs on and waits to switch to), rebuilding the estimator
//! on a new building (the same code live and in replay), and the `dtop_twin_model` record that
//! lets a replay switch at the same sample. No MQTT, no storage, no clocks.
//!
//! The twin does not depend on the engine crate (database drivers): the message's JSON
//! (`dtop_engine::ModelVersion`) is read into [`WireModel`], which takes `name`, `version`,
//! `status` and `spec.structure` and ignores every other field on purpose, so that the
//! catalogue may grow fields without breaking twins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use dtop_dynamics::ShearBuildingConfig;
use dtop_proto::v1::RigBirth;
use serde::{Deserialize, Serialize};

use crate::config::NoiseConfig;
use crate::estimate::{Misfit, RigEstimator};
use crate::lineproto::{EncodeError, Precision, escape_key, escape_measurement};
use crate::replay::record::{Fields, RecordError, RunId, write_string};
use crate::store::query::Row;

/// The filter the twin subscribes to when any rig follows a catalogue model.
pub const MODELS_FILTER: &str = "dtop/v1/models/+/latest";
/// Measurement of the model switch records (see [`ModelRecord`]).
pub const MODEL_MEASUREMENT: &str = "dtop_twin_model";
/// Most bytes of a model message read; a shear building of a few dozen floors is far below.
pub const MAX_MODEL_MESSAGE_BYTES: usize = 1 << 20;

/// The catalogue model named by a `dtop/v1/models/{name}/latest` topic, if it is one.
pub fn model_name_of_topic(topic: &str) -> Option<&str> {
    let name = topic
        .strip_prefix(dtop_proto::topic::ROOT)?
        .strip_prefix("/models/")?
        .strip_suffix("/latest")?;
    (!name.is_empty() && !name.contains('/')).then_some(name)
}

/// Why `name` is not a catalogue model name (the catalogue's own rule,
/// `dtop_studies::ModelRef::name_problem`: 1 to 64 lowercase letters, digits or '-', not
/// starting with '-'); `None` if it is one.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    (!ok).then(|| {
        format!(
            "model name {name:?} must be 1 to 64 lowercase letters, digits or '-', not starting with '-'"
        )
    })
}

/// The part of a `dtop_engine::ModelVersion` the twin reads. Unknown fields are ignored on
/// purpose (see the module doc).
#[derive(Debug, Clone, Deserialize)]
pub struct WireModel {
    pub name: String,
    pub version: u64,
    pub status: String,
    pub spec: WireSpec,
}

/// The part of a `dtop_studies::ModelSpec` the twin reads.
#[derive(Debug, Clone, Deserialize)]
pub struct WireSpec {
    pub structure: ShearBuildingConfig,
}

/// A usable, physical catalogue model version, ready to be adopted.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueModel {
    pub name: String,
    pub version: u64,
    pub building: ShearBuildingConfig,
}

/// Rig actor events compare for equality; a catalogue model's numbers are finite (refused
/// otherwise by [`parse_model_message`]), so its equality is total.
impl Eq for CatalogueModel {}

impl CatalogueModel {
    /// `name@version`, as operators write it (`dtop model approve name@N`).
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Why a model message or a switch was refused: the label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// Not JSON of a model version, too large, or for another topic's name.
    Unparsable,
    /// Status other than `current` or `approved`.
    NotUsable,
    /// The structure breaks a rule of `ShearBuildingConfig::problems`.
    NotPhysical,
    /// Its floors differ from the rig's birth.
    WrongFloors,
    /// No estimator can be built on it for the rig's birth.
    NotEstimable,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Unparsable => "unparsable",
            RefusalReason::NotUsable => "not_usable",
            RefusalReason::NotPhysical => "not_physical",
            RefusalReason::WrongFloors => "wrong_floors",
            RefusalReason::NotEstimable => "not_estimable",
        }
    }
}

/// A refused message or switch, with the reason in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    pub reason: RefusalReason,
    pub detail: String,
}

impl Refusal {
    fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Reads a message of `dtop/v1/models/{topic_name}/latest`. `Ok(None)` for an empty payload
/// (a cleared retained message: nothing to adopt, nothing wrong). Refuses anything that must
/// never be applied: not a model version, another name than the topic's, a status other than
/// `current`/`approved`, a structure that is not physical.
pub fn parse_model_message(
    topic_name: &str,
    payload: &[u8],
) -> Result<Option<CatalogueModel>, Refusal> {
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_MODEL_MESSAGE_BYTES {
        return Err(Refusal::new(
            RefusalReason::Unparsable,
            format!(
                "the message is {} bytes, above the {MAX_MODEL_MESSAGE_BYTES} a model may take",
                payload.len()
            ),
        ));
    }
    let wire: WireModel = serde_json::from_slice(payload).map_err(|e| {
        Refusal::new(
            RefusalReason::Unparsable,
            format!("not a model version (name, version, status, spec.structure): {e}"),
        )
    })?;
    if wire.name != topic_name {
        return Err(Refusal::new(
            RefusalReason::Unparsable,
            format!(
                "the message names model {:?} but came on the topic of {topic_name:?}",
                wire.name
            ),
        ));
    }
    if !matches!(wire.status.as_str(), "current" | "approved") {
        return Err(Refusal::new(
            RefusalReason::NotUsable,
            format!(
                "{}@{} has status {:?}; the twin adopts only current or approved versions \
                 (approve it with `dtop model approve {}@{}`)",
                wire.name, wire.version, wire.status, wire.name, wire.version
            ),
        ));
    }
    let problems = wire.spec.structure.problems();
    if !problems.is_empty() {
        return Err(Refusal::new(
            RefusalReason::NotPhysical,
            format!(
                "{}@{} is not a physical building: {}",
                wire.name,
                wire.version,
                problems.join("; ")
            ),
        ));
    }
    Ok(Some(CatalogueModel {
        name: wire.name,
        version: wire.version,
        building: wire.spec.structure,
    }))
}

/// Which model a rig's estimator runs on, as the twin status shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ModelInUse {
    /// The building of the twin's configuration (`model.building` or `model.rigs.<rig>`).
    #[default]
    Config,
    /// A catalogue model version, from stream-0 sample `since_sample` of the rig's current
    /// run (`None`: from the start of the estimator run).
    Catalogue {
        name: String,
        version: u64,
        since_sample: Option<u64>,
    },
}

/// A controller the twin stopped because of a model switch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerStopped {
    /// Why, in words for the operator.
    pub reason: String,
    /// The model version that stopped it (`name@version`).
    pub model: String,
    /// The first stream-0 sample without it.
    pub at_sample_index: u64,
}

/// One rig's adoption, as its stats and status show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AdoptionStats {
    /// The catalogue model the rig follows (`model.follow` / `model.follow_rigs`).
    pub follows: Option<String>,
    pub model: ModelInUse,
    /// A version received and waiting for the next block boundary (`name@version`).
    pub pending: Option<String>,
    /// Switches applied to this rig.
    pub switches_total: u64,
    /// Versions this rig refused (wrong floors, no estimator), by reason.
    pub refused: BTreeMap<RefusalReason, u64>,
    /// Running controllers stopped by a switch.
    pub controllers_stopped_total: u64,
    /// The latest controller a switch stopped, and why.
    pub controller_stopped: Option<ControllerStopped>,
}

/// One rig's adoption state: which model it follows, the version in use, the one waiting.
#[derive(Debug, Clone, Default)]
pub struct Adoption {
    follows: Option<String>,
    in_use: Option<Arc<CatalogueModel>>,
    pending: Option<Arc<CatalogueModel>>,
    /// The latest birth the rig's estimator was built from (to rebuild it on a switch).
    birth: Option<RigBirth>,
    stats: AdoptionStats,
}

impl Adoption {
    /// A rig following catalogue model `follows` (`None`: the configured building only).
    pub fn new(follows: Option<String>) -> Self {
        Self {
            stats: AdoptionStats {
                follows: follows.clone(),
                ..AdoptionStats::default()
            },
            follows,
            ..Self::default()
        }
    }

    /// Takes a version offered for this rig; `false` when there is nothing to do: not the
    /// followed model, or the version in use or already waiting (retained messages come
    /// again on every reconnect).
    pub fn offer(&mut self, model: Arc<CatalogueModel>) -> bool {
        if self.follows.as_deref() != Some(model.name.as_str()) {
            return false;
        }
        let same = |m: &Option<Arc<CatalogueModel>>| {
            m.as_ref()
                .is_some_and(|m| m.name == model.name && m.version == model.version)
        };
        if same(&self.pending) || (self.pending.is_none() && same(&self.in_use)) {
            return false;
        }
        // A newer message for the version in use withdraws a waiting one.
        if same(&self.in_use) {
            self.pending = None;
            self.stats.pending = None;
            return false;
        }
        self.stats.pending = Some(model.label());
        self.pending = Some(model);
        true
    }

    /// The version waiting for the next block boundary.
    pub fn pending(&self) -> Option<&Arc<CatalogueModel>> {
        self.pending.as_ref()
    }

    /// The building to estimate on: the adopted version's, else `configured`.
    pub fn building<'a>(&'a self, configured: &'a ShearBuildingConfig) -> &'a ShearBuildingConfig {
        self.in_use.as_ref().map_or(configured, |m| &m.building)
    }

    /// The version in use, if any.
    pub fn in_use(&self) -> Option<&Arc<CatalogueModel>> {
        self.in_use.as_ref()
    }

    /// Remembers the birth the rig's estimator is built from.
    pub fn set_birth(&mut self, birth: &RigBirth) {
        self.birth = Some(birth.clone());
    }

    pub fn birth(&self) -> Option<&RigBirth> {
        self.birth.as_ref()
    }

    /// Checks the waiting version against the rig's floors: `Ok(Some(model))` to switch to,
    /// `Ok(None)` when none waits; a refusal clears it and is counted.
    pub fn take_pending(&mut self, floors: usize) -> Result<Option<Arc<CatalogueModel>>, Refusal> {
        let Some(model) = self.pending.take() else {
            return Ok(None);
        };
        self.stats.pending = None;
        if model.building.floors() != floors {
            let refusal = Refusal::new(
                RefusalReason::WrongFloors,
                format!(
                    "{} has {} floors, the rig's birth {floors}; it stays on {}",
                    model.label(),
                    model.building.floors(),
                    self.describe_in_use()
                ),
            );
            self.count_refusal(refusal.reason);
            return Err(refusal);
        }
        Ok(Some(model))
    }

    /// Counts a refusal of a version for this rig.
    pub fn count_refusal(&mut self, reason: RefusalReason) {
        *self.stats.refused.entry(reason).or_default() += 1;
    }

    /// Records that the rig now runs on `model` from stream-0 sample `since_sample`.
    pub fn switched(&mut self, model: Arc<CatalogueModel>, since_sample: Option<u64>) {
        self.stats.model = ModelInUse::Catalogue {
            name: model.name.clone(),
            version: model.version,
            since_sample,
        };
        self.stats.switches_total += 1;
        self.in_use = Some(model);
    }

    /// A new estimator run starts on the version in use (if any): from its start.
    pub fn new_run(&mut self) {
        if let ModelInUse::Catalogue { since_sample, .. } = &mut self.stats.model {
            *since_sample = None;
        }
    }

    /// Records a controller the switch stopped.
    pub fn controller_stopped(&mut self, stopped: ControllerStopped) {
        self.stats.controllers_stopped_total += 1;
        self.stats.controller_stopped = Some(stopped);
    }

    /// The version in use, in words.
    pub fn describe_in_use(&self) -> String {
        self.in_use
            .as_ref()
            .map_or_else(|| "the configured building".to_owned(), |m| m.label())
    }

    pub fn stats(&self) -> &AdoptionStats {
        &self.stats
    }
}

/// What happened to the estimate when the estimator was rebuilt on a new building.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Carried {
    /// Same dimensions: the state estimate, its covariance and the NIS window carry on.
    Kept,
    /// The old state does not fit the new filter: it restarts at rest.
    Restarted,
}

impl Carried {
    pub fn as_str(self) -> &'static str {
        match self {
            Carried::Kept => "kept",
            Carried::Restarted => "restarted",
        }
    }
}

/// `old` rebuilt for `building` (same birth, noise and publication rate): the state carries
/// over when it fits, else the new filter starts at rest; either way the next sample index
/// carries on, so the next block continues the run. Live and replay both switch with this.
///
/// # Errors
/// Why no estimator can be built on `building` for `birth`; `old` is then kept.
pub fn rebuild_estimator(
    old: &RigEstimator,
    birth: &RigBirth,
    building: &ShearBuildingConfig,
    noise: &NoiseConfig,
    state_publish_hz: f64,
) -> Result<(RigEstimator, Carried), Misfit> {
    let mut new = RigEstimator::from_birth(birth, building, noise, state_publish_hz)?;
    let checkpoint = old.checkpoint();
    if new.restore(&checkpoint).is_ok() {
        return Ok((new, Carried::Kept));
    }
    let mut at_rest = new.checkpoint();
    at_rest.next_sample_index = checkpoint.next_sample_index;
    // Restoring the new filter's own snapshot cannot fail on dimensions or session.
    new.restore(&at_rest)
        .map_err(|e| Misfit(vec![format!("cannot restart the filter: {e}")]))?;
    Ok((new, Carried::Restarted))
}

/// A model switch as stored: what a replay needs to switch at the same sample, without the
/// catalogue.
///
/// ```text
/// dtop_twin_model,rig=<rig>,run=<run> name="<name>",version=<i>i,first_sample_index=<i>i,carried="kept|restarted",building="<JSON ShearBuildingConfig>" <t>
///     one per switch of a running estimator, at the time of the first block estimated on
///     the new model (first_sample_index is that block's first stream-0 sample).
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    pub run: RunId,
    pub name: String,
    pub version: u64,
    pub first_sample_index: u64,
    pub carried: Carried,
    pub building: ShearBuildingConfig,
    /// Time of the first block on the new model, ns, as read back from storage (not written:
    /// [`ModelRecord::encode`] is given the block's time).
    pub time_ns: i64,
}

impl ModelRecord {
    /// Appends the record's line, stamped `time_ns`; returns the lines appended (1).
    pub fn encode(
        &self,
        out: &mut String,
        rig: &str,
        time_ns: u64,
        precision: Precision,
    ) -> Result<usize, EncodeError> {
        let ts = precision
            .from_ns(time_ns)
            .ok_or(EncodeError::TimestampOutOfRange {
                sample: 0,
                ts_ns: u128::from(time_ns),
            })?;
        escape_measurement(out, MODEL_MEASUREMENT);
        out.push_str(",rig=");
        escape_key(out, rig);
        let _ = write!(out, ",run={} name=", self.run);
        write_string(out, &self.name);
        let _ = write!(
            out,
            ",version={}i,first_sample_index={}i,carried=",
            i64::try_from(self.version).unwrap_or(i64::MAX),
            i64::try_from(self.first_sample_index).unwrap_or(i64::MAX)
        );
        write_string(out, self.carried.as_str());
        out.push_str(",building=");
        // A struct of numbers always serializes; floats are shortest round-trip decimals.
        write_string(
            out,
            &serde_json::to_string(&self.building).unwrap_or_default(),
        );
        let _ = writeln!(out, " {ts}");
        Ok(1)
    }

    pub fn from_row(row: &Row) -> Result<Self, RecordError> {
        let f = Fields::new(row, MODEL_MEASUREMENT);
        let carried = match f.str("carried")? {
            "kept" => Carried::Kept,
            "restarted" => Carried::Restarted,
            other => return Err(f.error(format!("carried = {other:?} is not kept/restarted"))),
        };
        Ok(Self {
            run: RunId(f.u64("run")?),
            name: f.str("name")?.to_owned(),
            version: f.u64("version")?,
            first_sample_index: f.u64("first_sample_index")?,
            carried,
            building: f.json("building")?,
            time_ns: f.time_ns(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{ControlConfig, ModelConfig};
    use crate::control::{ActuatorPlant, Law};
    use crate::lineproto::Precision;
    use crate::replay::Replayer;
    use crate::replay::record::{
        BIRTH_MEASUREMENT, BirthRecord, CHECKPOINT_MEASUREMENT, CONTROLLER_MEASUREMENT,
        CheckpointRecord, ControllerRecord, FEED_MEASUREMENT, FeedRecord,
    };
    use crate::rig::{Event, RigState};
    use dtop_dynamics::ShearBuilding;
    use dtop_proto::Message as _;
    use dtop_proto::RigId;
    use dtop_proto::v1::command::Kind;
    use dtop_proto::v1::command_ack::Status;
    use dtop_proto::v1::set_control::Law as WireLaw;
    use dtop_proto::v1::{
        ActuatorLimits, Channel, ChannelKind, ChannelSamples, Command, SampleBlock, SetControl,
    };
    use nalgebra::DVector;
    use serde_json::{Value, json};
    use tokio::time::Instant;

    /// A model version message as the API server publishes it (`dtop_engine::ModelVersion`),
    /// with fields the twin does not read.
    fn message(name: &str, version: u64, status: &str, building: &ShearBuildingConfig) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "name": name,
            "version": version,
            "spec": {
                "description": "updated from OMA",
                "structure": building,
                "sensors": [{"floor": 1}],
            },
            "provenance": {"kind": "study", "study": "s-1"},
            "created_by": "update",
            "created_at": "2026-12-06T21:00:00Z",
            "status": status,
            "review": null,
        }))
        .unwrap()
    }

    /// The Southampton building with every storey's stiffness scaled by `k`.
    fn stiffened(k: f64) -> ShearBuildingConfig {
        let mut b = ShearBuildingConfig::southampton();
        for s in &mut b.storey_stiffness_n_per_m {
            *s *= k;
        }
        b
    }

    #[test]
    fn reads_the_model_name_of_latest_topics_only() {
        assert_eq!(
            model_name_of_topic("dtop/v1/models/southampton/latest"),
            Some("southampton")
        );
        assert_eq!(model_name_of_topic("dtop/v1/models/a/b/latest"), None);
        assert_eq!(model_name_of_topic("dtop/v1/models//latest"), None);
        assert_eq!(model_name_of_topic("dtop/v1/models/a/state"), None);
        assert_eq!(model_name_of_topic("dtop/v1/rig/a/birth"), None);
    }

    #[test]
    fn name_rule_is_the_catalogues() {
        assert_eq!(name_problem("lab-1-model"), None);
        assert_eq!(name_problem("s3"), None);
        for bad in ["", "-x", "Lab", "a_b", "a b", &"x".repeat(65)] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn parses_a_usable_version_ignoring_unknown_fields() {
        let b = stiffened(0.9);
        for status in ["current", "approved"] {
            let m = parse_model_message("lab", &message("lab", 3, status, &b))
                .unwrap()
                .unwrap();
            assert_eq!((m.name.as_str(), m.version), ("lab", 3));
            assert_eq!(m.building, b);
            assert_eq!(m.label(), "lab@3");
        }
        assert_eq!(parse_model_message("lab", b""), Ok(None));
    }

    #[test]
    fn refuses_what_must_never_be_applied_with_the_reason() {
        let b = stiffened(0.9);
        let refusal = |payload: &[u8]| parse_model_message("lab", payload).unwrap_err();
        for status in ["proposed", "rejected", "whatever"] {
            let r = refusal(&message("lab", 4, status, &b));
            assert_eq!(r.reason, RefusalReason::NotUsable);
            assert!(r.detail.contains("dtop model approve lab@4"), "{r}");
        }
        assert_eq!(refusal(b"{not json").reason, RefusalReason::Unparsable);
        assert_eq!(
            refusal(br#"{"name":"lab","version":1,"status":"current"}"#).reason,
            RefusalReason::Unparsable
        );
        let r = refusal(&message("other", 1, "current", &b));
        assert_eq!(r.reason, RefusalReason::Unparsable);
        assert!(r.detail.contains("\"other\""), "{r}");
        let mut bad = b.clone();
        bad.floor_masses_kg[1] = -1.0;
        let r = refusal(&message("lab", 5, "current", &bad));
        assert_eq!(r.reason, RefusalReason::NotPhysical);
        assert!(r.detail.contains("floor_masses_kg[1]"), "{r}");
        let huge = vec![b' '; MAX_MODEL_MESSAGE_BYTES + 1];
        assert_eq!(refusal(&huge).reason, RefusalReason::Unparsable);
    }

    fn model(name: &str, version: u64, building: ShearBuildingConfig) -> Arc<CatalogueModel> {
        Arc::new(CatalogueModel {
            name: name.into(),
            version,
            building,
        })
    }

    #[test]
    fn the_version_in_use_again_is_a_no_op_and_other_models_are_ignored() {
        let mut a = Adoption::new(Some("lab".into()));
        assert!(!a.offer(model("other", 1, stiffened(1.0))));
        assert!(a.offer(model("lab", 1, stiffened(1.0))));
        // The same version again while it waits: nothing new.
        assert!(!a.offer(model("lab", 1, stiffened(1.0))));
        let taken = a.take_pending(3).unwrap().unwrap();
        a.switched(taken, Some(100));
        assert_eq!(
            a.stats().model,
            ModelInUse::Catalogue {
                name: "lab".into(),
                version: 1,
                since_sample: Some(100)
            }
        );
        // A reconnect delivers the retained version in use again.
        assert!(!a.offer(model("lab", 1, stiffened(1.0))));
        assert_eq!(a.take_pending(3), Ok(None));
        assert_eq!(a.stats().switches_total, 1);
        // A newer one waits; a retained copy of the one in use then withdraws it.
        assert!(a.offer(model("lab", 2, stiffened(0.9))));
        assert_eq!(a.stats().pending.as_deref(), Some("lab@2"));
        assert!(!a.offer(model("lab", 1, stiffened(1.0))));
        assert_eq!(a.take_pending(3), Ok(None));
    }

    #[test]
    fn a_version_with_other_floors_than_the_birth_is_refused_and_counted() {
        let mut a = Adoption::new(Some("lab".into()));
        let mut two = stiffened(1.0);
        two.floor_masses_kg.pop();
        two.storey_stiffness_n_per_m.pop();
        assert!(a.offer(model("lab", 7, two)));
        let r = a.take_pending(3).unwrap_err();
        assert_eq!(r.reason, RefusalReason::WrongFloors);
        assert!(
            r.detail.contains("lab@7 has 2 floors, the rig's birth 3"),
            "{r}"
        );
        assert_eq!(a.stats().refused.get(&RefusalReason::WrongFloors), Some(&1));
        assert_eq!(a.stats().model, ModelInUse::Config);
        assert_eq!(a.stats().pending, None);
    }

    // ---- A rig switching models live, and replaying it ----

    const ACCEL_SCALE: f64 = 1e-4;
    const FORCE_SCALE: f64 = 1e-3;
    const BLOCK: usize = 100;
    pub(crate) const T0_NS: u64 = 1_700_000_000_000_000_000;
    /// Storey stiffness of the adopted version, relative to the Southampton building's.
    const NEW_STIFFNESS_FACTOR: f64 = 0.7;

    fn rig() -> RigId {
        RigId::new("r1").unwrap()
    }

    pub(crate) fn birth() -> dtop_proto::v1::RigBirth {
        let mut channels: Vec<Channel> = (1..=3)
            .map(|floor| Channel {
                id: floor,
                name: format!("floor{floor}_accel"),
                kind: ChannelKind::Acceleration as i32,
                unit: "m/s^2".into(),
                scale: ACCEL_SCALE,
                sample_rate_hz: 1000.0,
                floor,
                ..Default::default()
            })
            .collect();
        channels.push(Channel {
            id: 10,
            name: "shaker_force".into(),
            kind: ChannelKind::Force as i32,
            unit: "N".into(),
            scale: FORCE_SCALE,
            sample_rate_hz: 1000.0,
            floor: 1,
            ..Default::default()
        });
        dtop_proto::v1::RigBirth {
            rig_id: "r1".into(),
            session: 1,
            channels,
            floors: 3,
            actuator: Some(ActuatorLimits {
                floor: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `blocks` blocks of the Southampton building shaken on floor 1 by a pseudo-random
    /// force (a fixed linear congruential sequence, so every run is the same), quantised.
    pub(crate) fn simulate(blocks: usize) -> Vec<SampleBlock> {
        let model = ShearBuilding::southampton()
            .state_space()
            .discretize_zoh(1e-3)
            .unwrap();
        let mut x = DVector::zeros(model.n_states());
        let mut u = DVector::zeros(model.n_inputs());
        let mut y = DVector::zeros(model.n_outputs());
        let mut lcg: u64 = 0x5EED;
        let mut uniform = move || {
            lcg = lcg
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (lcg >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        (0..blocks as u64)
            .map(|seq| {
                let mut raw: Vec<Vec<i32>> = (0..4).map(|_| Vec::with_capacity(BLOCK)).collect();
                for _ in 0..BLOCK {
                    let f = 3.0 * uniform();
                    u[model.input_floor_force(1)] = f;
                    model.step(&mut x, &u, &mut y);
                    for floor in 1..=3 {
                        let a = y[model.output_floor_accel(floor)] + 0.004 * uniform();
                        raw[floor - 1].push((a / ACCEL_SCALE).round() as i32);
                    }
                    raw[3].push((f / FORCE_SCALE).round() as i32);
                }
                let first = seq * BLOCK as u64;
                SampleBlock {
                    rig_id: "r1".into(),
                    session: 1,
                    seq,
                    first_sample_index: first,
                    sample_period_ns: 1_000_000,
                    first_timestamp_ns: T0_NS + first * 1_000_000,
                    channels: raw
                        .into_iter()
                        .zip([1, 2, 3, 10])
                        .map(|(raw, channel_id)| ChannelSamples { channel_id, raw })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect()
    }

    fn samples(block: &SampleBlock) -> Event {
        Event::Samples(block.encode_to_vec().into())
    }

    /// A rig following `lab`, estimating at 100 Hz, checkpointed every 0.5 s, with
    /// twin-hosted control enabled (off until commanded).
    fn following_rig() -> RigState {
        let model = ModelConfig {
            state_publish_hz: 100.0,
            checkpoint_interval_s: 0.5,
            follow: Some("lab".into()),
            ..ModelConfig::default()
        };
        let mut s = RigState::new(rig(), Precision::Us, 4)
            .with_model(Arc::new(model))
            .with_control(ControlConfig {
                enabled: true,
                ..ControlConfig::default()
            })
            .with_follow(Some("lab".into()));
        s.handle(
            &Event::Birth(birth().encode_to_vec().into()),
            Instant::now(),
        );
        assert!(s.estimator().is_some());
        s
    }

    fn set_dvf(s: &mut RigState, id: &str, gain_n_s_per_m: f64) -> Status {
        set_control(s, id, WireLaw::Dvf, gain_n_s_per_m, false)
    }

    fn set_control(
        s: &mut RigState,
        id: &str,
        law: WireLaw,
        gain_n_s_per_m: f64,
        at_edge: bool,
    ) -> Status {
        use dtop_proto::v1::set_control::Placement;
        let placement = if at_edge {
            Placement::Edge
        } else {
            Placement::Twin
        };
        let command = Command {
            id: id.into(),
            target_rig: "r1".into(),
            issued_by: "test".into(),
            kind: Some(Kind::SetControl(SetControl {
                law: law as i32,
                gain_n_s_per_m,
                placement: placement as i32,
            })),
            ..Command::default()
        };
        s.on_command(&command.encode_to_vec(), 1_800_000_000_000_000_000);
        let acks: Vec<_> = s.take_acks().collect();
        assert_eq!(acks.len(), 1);
        acks[0].status()
    }

    /// Critical DVF gain Bl·h on floor 3 of `building`, N·s/m, from the dynamics control study.
    fn critical_n_s_per_m(building: &ShearBuildingConfig) -> f64 {
        let plant = ActuatorPlant::design(building, 3).unwrap();
        plant.n_s_per_m(plant.critical_gain_a_per_m_s)
    }

    /// Largest real part of the continuous closed loop of `building` with the actuator on
    /// floor 3 and DVF feedback `g` N·s/m (coil force +g·v₃ on the proof mass): an
    /// independent check of the critical gain.
    fn closed_loop_growth_rate(building: &ShearBuildingConfig, g: f64) -> f64 {
        let b = ShearBuilding::new(ShearBuildingConfig {
            actuator: Some(dtop_dynamics::InertialActuator {
                floor: 3,
                ..Default::default()
            }),
            ..building.clone()
        })
        .unwrap();
        let ss = b.state_space();
        let actuator = ss.input_actuator().unwrap();
        let v3 = ss.output_floor_velocity(3);
        let closed = &ss.a + ss.b.column(actuator) * ss.c.row(v3) * g;
        closed
            .complex_eigenvalues()
            .iter()
            .map(|l| l.re)
            .fold(f64::NEG_INFINITY, f64::max)
    }

    #[test]
    fn a_dvf_gain_fine_on_the_old_model_but_above_the_new_limit_is_stopped_with_the_reason() {
        let old = ShearBuildingConfig::southampton();
        let new = stiffened(NEW_STIFFNESS_FACTOR);
        let (old_crit, new_crit) = (critical_n_s_per_m(&old), critical_n_s_per_m(&new));
        // The critical gains are where the continuous loop starts to grow, checked here
        // against the eigenvalues (±1 % brackets the crossing).
        for (b, crit) in [(&old, old_crit), (&new, new_crit)] {
            assert!(closed_loop_growth_rate(b, 0.99 * crit) < 0.0);
            assert!(closed_loop_growth_rate(b, 1.01 * crit) > 0.0);
        }
        // A gain allowed on the old model (≤ 0.8 of its critical) but not on the new one.
        let g = 0.5 * (0.8 * old_crit + 0.8 * new_crit);
        assert!(
            0.8 * new_crit < g && g < 0.8 * old_crit,
            "{old_crit} {new_crit}"
        );
        let blocks = simulate(4);
        let mut s = following_rig();
        s.handle(&samples(&blocks[0]), Instant::now());
        assert_eq!(set_dvf(&mut s, "c1", g), Status::Applied);
        s.handle(&samples(&blocks[1]), Instant::now());
        assert_eq!(s.take_drives().count(), 1);
        let version = s.controller().version();

        s.handle(&Event::Model(model("lab", 2, new.clone())), Instant::now());
        // Nothing changes until the next block boundary.
        assert_eq!(
            s.controller().law(),
            Law::Dvf {
                gain_a_per_m_s: g / 10.0
            }
        );
        assert_eq!(
            s.stats(Instant::now()).adoption.pending.as_deref(),
            Some("lab@2")
        );
        let chunks = s.handle(&samples(&blocks[2]), Instant::now());
        assert!(chunks[0].lines.contains("\ndtop_twin_model,rig=r1,run="));
        assert_eq!(s.controller().law(), Law::Off);
        assert!(s.controller().version() > version);
        // Stopped as an OFF command stops it: one zero drive, then none.
        let drives: Vec<_> = s.take_drives().collect();
        assert_eq!(drives.len(), 1, "{drives:?}");
        assert_eq!(drives[0].force_n, 0.0);
        assert_eq!(drives[0].sample_index, 2 * BLOCK as u64 - 1);
        let stats = s.stats(Instant::now());
        let stopped = stats.adoption.controller_stopped.clone().unwrap();
        assert_eq!(stopped.model, "lab@2");
        assert_eq!(stopped.at_sample_index, 2 * BLOCK as u64);
        for part in ["lab@2", "dvf h=", "exceeds 0.8 of the critical DVF gain"] {
            assert!(
                stopped.reason.contains(part),
                "{part:?} not in {}",
                stopped.reason
            );
        }
        assert_eq!(stats.adoption.controllers_stopped_total, 1);
        let limit = stats.dvf_limit.unwrap();
        assert!((limit.critical_gain_n_s_per_m - new_crit).abs() < 1e-9 * new_crit);
        let status = serde_json::to_value(
            crate::stats::TwinStats {
                rigs: [(rig(), stats)].into(),
                ..Default::default()
            }
            .rig_status(&rig(), 1)
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            status["model"],
            json!({"source": "catalogue", "name": "lab", "version": 2, "since_sample": 200})
        );
        assert_eq!(status["controller_stopped"]["model"], "lab@2");
        s.handle(&samples(&blocks[3]), Instant::now());
        assert_eq!(s.take_drives().count(), 0);
    }

    #[test]
    fn a_dvf_gain_fine_on_both_models_is_kept_and_the_limit_follows_the_new_model() {
        let new = stiffened(NEW_STIFFNESS_FACTOR);
        let new_crit = critical_n_s_per_m(&new);
        let g = 0.5 * new_crit.min(critical_n_s_per_m(&ShearBuildingConfig::southampton()));
        let blocks = simulate(3);
        let mut s = following_rig();
        s.handle(&samples(&blocks[0]), Instant::now());
        assert_eq!(set_dvf(&mut s, "c1", g), Status::Applied);
        let version = s.controller().version();
        s.handle(&Event::Model(model("lab", 2, new)), Instant::now());
        s.handle(&samples(&blocks[1]), Instant::now());
        assert_eq!(
            s.controller().law(),
            Law::Dvf {
                gain_a_per_m_s: g / 10.0
            }
        );
        assert_eq!(
            s.controller().version(),
            version,
            "the same law, the same version"
        );
        let drives: Vec<_> = s.take_drives().collect();
        assert_eq!(drives.len(), 1);
        assert!(drives[0].force_n != 0.0);
        let stats = s.stats(Instant::now());
        assert_eq!(stats.adoption.controller_stopped, None);
        let limit = stats.dvf_limit.unwrap();
        assert!((limit.max_gain_n_s_per_m - 0.8 * new_crit).abs() < 1e-9 * new_crit);
    }

    #[test]
    fn twin_hosted_lqg_is_redesigned_on_the_new_model_and_keeps_driving() {
        let blocks = simulate(3);
        let mut s = following_rig();
        s.handle(&samples(&blocks[0]), Instant::now());
        assert_eq!(
            set_control(&mut s, "q", WireLaw::Lqg, 0.0, false),
            Status::Applied
        );
        let version = s.controller().version();
        let Some(crate::control::DriveLaw::Lqr {
            feedback_row_n: old_row,
        }) = s.controller().drive_law()
        else {
            panic!("LQR expected");
        };
        s.handle(
            &Event::Model(model("lab", 2, stiffened(NEW_STIFFNESS_FACTOR))),
            Instant::now(),
        );
        s.handle(&samples(&blocks[1]), Instant::now());
        assert_eq!(s.controller().law(), Law::Lqg);
        assert!(
            s.controller().version() > version,
            "a new design, a new version"
        );
        let Some(crate::control::DriveLaw::Lqr {
            feedback_row_n: new_row,
        }) = s.controller().drive_law()
        else {
            panic!("LQR expected");
        };
        assert_eq!(new_row.len(), old_row.len());
        assert_ne!(new_row, old_row, "designed on the new model");
        assert_eq!(s.stats(Instant::now()).adoption.controller_stopped, None);
        let drives: Vec<_> = s.take_drives().collect();
        assert_eq!(drives.len(), 1);
        assert!(drives[0].force_n.is_finite() && drives[0].force_n != 0.0);
    }

    #[test]
    fn an_edge_hosted_dvf_gain_above_the_new_limit_switches_the_edge_loop_off() {
        let old_crit = critical_n_s_per_m(&ShearBuildingConfig::southampton());
        let new = stiffened(NEW_STIFFNESS_FACTOR);
        let g = 0.5 * (0.8 * old_crit + 0.8 * critical_n_s_per_m(&new));
        let blocks = simulate(2);
        let mut s = following_rig();
        s.handle(&samples(&blocks[0]), Instant::now());
        assert_eq!(
            set_control(&mut s, "e", WireLaw::Dvf, g, true),
            Status::Applied
        );
        let pushed: Vec<_> = s.take_params().collect();
        let running = pushed.last().unwrap();
        assert!(running.enabled);
        s.handle(&Event::Model(model("lab", 2, new)), Instant::now());
        s.handle(&samples(&blocks[1]), Instant::now());
        assert_eq!(s.controller().law(), Law::Off);
        let params: Vec<_> = s.take_params().collect();
        assert_eq!(params.len(), 1, "{params:?}");
        assert!(!params[0].enabled && params[0].version > running.version);
        assert_eq!(
            s.take_drives().count(),
            0,
            "the edge ran the law, not the twin"
        );
        let stopped = s.stats(Instant::now()).adoption.controller_stopped.unwrap();
        assert!(stopped.reason.contains("at edge"), "{}", stopped.reason);
    }

    #[test]
    fn a_version_with_other_floors_reaching_a_rig_is_refused_and_it_keeps_its_model() {
        let blocks = simulate(2);
        let mut s = following_rig();
        s.handle(&samples(&blocks[0]), Instant::now());
        let mut two = stiffened(1.0);
        two.floor_masses_kg.pop();
        two.storey_stiffness_n_per_m.pop();
        s.handle(&Event::Model(model("lab", 9, two)), Instant::now());
        let chunks = s.handle(&samples(&blocks[1]), Instant::now());
        assert!(!chunks[0].lines.contains("dtop_twin_model"));
        let stats = s.stats(Instant::now());
        assert_eq!(stats.adoption.model, ModelInUse::Config);
        assert_eq!(
            stats.adoption.refused.get(&RefusalReason::WrongFloors),
            Some(&1)
        );
        assert!(stats.estimating);
    }

    /// Parses one line this twin wrote (at µs precision) into the row a query returns.
    pub(crate) fn parse_line(line: &str) -> (String, Row) {
        // Split on spaces and commas outside quotes, keeping escapes for the next step.
        let split = |text: &str, at: char| {
            let (mut parts, mut cur, mut quoted, mut escaped) =
                (Vec::new(), String::new(), false, false);
            for c in text.chars() {
                if escaped {
                    cur.push(c);
                    escaped = false;
                    continue;
                }
                match c {
                    '\\' => {
                        cur.push(c);
                        escaped = true;
                    }
                    '"' => {
                        cur.push(c);
                        quoted = !quoted;
                    }
                    c if c == at && !quoted => parts.push(std::mem::take(&mut cur)),
                    c => cur.push(c),
                }
            }
            parts.push(cur);
            parts
        };
        let unescape = |s: &str| {
            let (mut out, mut escaped) = (String::new(), false);
            for c in s.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                } else {
                    out.push(c);
                    escaped = false;
                }
            }
            out
        };
        let parts = split(line, ' ');
        assert_eq!(parts.len(), 3, "{line}");
        let head = split(&parts[0], ',');
        let mut columns = vec!["time".to_owned()];
        let time_us: i64 = parts[2].parse().unwrap();
        let mut values = vec![json!(time_us * 1000)];
        for tag in &head[1..] {
            let (k, v) = tag.split_once('=').unwrap();
            columns.push(k.to_owned());
            values.push(Value::String(unescape(v)));
        }
        for field in split(&parts[1], ',') {
            let (k, v) = field.split_once('=').unwrap();
            columns.push(k.to_owned());
            values.push(if let Some(s) = v.strip_prefix('"') {
                Value::String(unescape(s.strip_suffix('"').unwrap()))
            } else if let Some(i) = v.strip_suffix('i') {
                json!(i.parse::<i64>().unwrap())
            } else {
                json!(v.parse::<f64>().unwrap())
            });
        }
        let row = Row {
            columns: columns.into(),
            values,
            tags: Arc::new(BTreeMap::new()),
        };
        (unescape(&head[0]), row)
    }

    /// The replay records among `lines`, by measurement.
    pub(crate) fn records(lines: &str) -> BTreeMap<String, Vec<Row>> {
        let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for line in lines.lines().filter(|l| l.starts_with("dtop_twin_")) {
            let (measurement, row) = parse_line(line);
            out.entry(measurement).or_default().push(row);
        }
        out
    }

    /// (sample index, displacements, velocities) of every estimate, as bits.
    type Bits = (u64, Vec<u64>, Vec<u64>);

    fn bits(index: u64, d: &[f64], v: &[f64]) -> Bits {
        (
            index,
            d.iter().map(|x| x.to_bits()).collect(),
            v.iter().map(|x| x.to_bits()).collect(),
        )
    }

    /// Replays the feed records from the first at or after `from_ns` with the original
    /// blocks, starting at `checkpoint` if given; with `switches` or without. With
    /// `live_drives`, every drive must be the one the feed record says the live twin made.
    fn replay(
        recs: &BTreeMap<String, Vec<Row>>,
        blocks: &[SampleBlock],
        checkpoint: Option<&CheckpointRecord>,
        switches: Vec<ModelRecord>,
        live_drives: bool,
    ) -> Vec<Bits> {
        let birth = BirthRecord::from_row(&recs[BIRTH_MEASUREMENT][0]).unwrap();
        let mut replayer = Replayer::with_model_switches(
            &birth,
            checkpoint.map(|c| (&c.checkpoint, c.time_ns)),
            switches,
        )
        .unwrap();
        for row in &recs[CONTROLLER_MEASUREMENT] {
            replayer.add_controller(ControllerRecord::from_row(row).unwrap());
        }
        let from_ns = checkpoint.map_or(i64::MIN, |c| c.time_ns);
        let mut out = Vec::new();
        for row in &recs[FEED_MEASUREMENT] {
            if row.time_ns().unwrap() < from_ns {
                continue;
            }
            let feed = FeedRecord::from_row(row).unwrap();
            let block = &blocks[usize::try_from(feed.seq).unwrap()];
            let replayed = replayer.feed(&feed, block).unwrap();
            // DVF runs from block 1 on, so the drive comparison is not vacuous.
            assert_eq!(feed.drive_n.is_some(), feed.seq >= 1, "block {}", feed.seq);
            assert!(
                !live_drives
                    || replayed.drive_n.map(f64::to_bits) == feed.drive_n.map(f64::to_bits),
                "drive after block {}",
                feed.seq
            );
            out.extend(
                replayed
                    .estimates
                    .iter()
                    .map(|e| bits(e.sample_index, &e.displacement_m, &e.velocity_m_s)),
            );
        }
        out
    }

    #[test]
    fn replaying_across_a_switch_gives_the_live_estimates_bit_for_bit() {
        let blocks = simulate(20);
        let mut s = following_rig();
        let new = stiffened(NEW_STIFFNESS_FACTOR);
        // A small DVF gain, kept across the switch, so drives are replayed too.
        let g = 0.3 * critical_n_s_per_m(&new);
        let mut lines = String::new();
        let mut live = Vec::new();
        for (k, block) in blocks.iter().enumerate() {
            if k == 1 {
                assert_eq!(set_dvf(&mut s, "c1", g), Status::Applied);
            }
            if k == 10 {
                s.handle(&Event::Model(model("lab", 2, new.clone())), Instant::now());
            }
            for chunk in s.handle(&samples(block), Instant::now()) {
                lines.push_str(&chunk.lines);
            }
            live.extend(s.take_states().map(|t| {
                let d: Vec<f64> = t.floors.iter().map(|f| f.displacement_m).collect();
                let v: Vec<f64> = t.floors.iter().map(|f| f.velocity_m_s).collect();
                bits(t.sample_index, &d, &v)
            }));
        }
        assert_eq!(live.len(), 20 * BLOCK / 10);
        let recs = records(&lines);
        let switches: Vec<ModelRecord> = recs[MODEL_MEASUREMENT]
            .iter()
            .map(|r| ModelRecord::from_row(r).unwrap())
            .collect();
        assert_eq!(switches.len(), 1);
        let switch = &switches[0];
        assert_eq!(
            (
                switch.name.as_str(),
                switch.version,
                switch.first_sample_index
            ),
            ("lab", 2, 10 * BLOCK as u64)
        );
        assert_eq!(switch.carried, Carried::Kept);
        assert_eq!(switch.building, new);
        assert_eq!(switch.time_ns, (T0_NS + 1000 * 1_000_000) as i64);

        // From the run's start.
        assert_eq!(replay(&recs, &blocks, None, switches.clone(), true), live);
        // From each checkpoint: before the switch, at its block, and after it.
        let checkpoints: Vec<CheckpointRecord> = recs[CHECKPOINT_MEASUREMENT]
            .iter()
            .map(|r| CheckpointRecord::from_row(r).unwrap())
            .collect();
        let at: Vec<i64> = checkpoints.iter().map(|c| c.time_ns).collect();
        assert!(at.contains(&switch.time_ns), "{at:?}");
        assert!(at.iter().any(|&t| t < switch.time_ns) && at.iter().any(|&t| t > switch.time_ns));
        for checkpoint in &checkpoints {
            let replayed = replay(&recs, &blocks, Some(checkpoint), switches.clone(), true);
            let first = replayed[0].0;
            let expected: Vec<Bits> = live.iter().filter(|b| b.0 >= first).cloned().collect();
            assert_eq!(
                replayed, expected,
                "from the checkpoint at {}",
                checkpoint.time_ns
            );
        }
        // Without the switch record the replay is not the live run: the record matters.
        let without = replay(&recs, &blocks, None, Vec::new(), false);
        let after = live.iter().position(|b| b.0 >= 10 * BLOCK as u64).unwrap();
        assert_eq!(without[..after], live[..after]);
        assert_ne!(without[after..], live[after..]);
    }

    #[test]
    fn following_is_configured_per_twin_and_per_rig_and_every_problem_is_reported() {
        use crate::config::TwinConfig;
        let config = TwinConfig::from_toml_str(
            "[model]\nfollow = \"southampton\"\n[model.follow_rigs]\nlab-1 = \"lab-1-model\"\n",
        )
        .unwrap();
        config.validate().unwrap();
        let m = &config.model;
        assert_eq!(
            m.follows(&RigId::new("lab-1").unwrap()),
            Some("lab-1-model")
        );
        assert_eq!(
            m.follows(&RigId::new("other").unwrap()),
            Some("southampton")
        );
        assert!(m.follows_any());
        let none = TwinConfig::from_toml_str("").unwrap();
        assert_eq!(none.model.follows(&rig()), None);
        assert!(!none.model.follows_any());

        let config = TwinConfig::from_toml_str(
            "[model]\nfollow = \"South_ampton\"\n[model.follow_rigs]\n\"bad rig\" = \"-x\"\nok = \"\"\n",
        )
        .unwrap();
        let all = config.validate().unwrap_err().to_string();
        for part in [
            "model.follow: model name \"South_ampton\" must be",
            "model.follow_rigs.bad rig: is not a valid rig id",
            "model.follow_rigs.bad rig: model name \"-x\"",
            "model.follow_rigs.ok: model name \"\"",
        ] {
            assert!(all.contains(part), "missing {part:?} in:\n{all}");
        }
        assert_eq!(config.validate().unwrap_err().0.len(), 4, "{all}");
        assert!(TwinConfig::from_toml_str("[model]\nfollows = \"x\"\n").is_err());
    }

    #[test]
    fn a_version_arriving_before_the_birth_is_the_building_the_run_starts_on() {
        let model_config = ModelConfig {
            follow: Some("lab".into()),
            ..ModelConfig::default()
        };
        let mut s = RigState::new(rig(), Precision::Us, 4)
            .with_model(Arc::new(model_config))
            .with_follow(Some("lab".into()));
        let new = stiffened(NEW_STIFFNESS_FACTOR);
        s.handle(&Event::Model(model("lab", 4, new.clone())), Instant::now());
        s.handle(
            &Event::Birth(birth().encode_to_vec().into()),
            Instant::now(),
        );
        let fitted = &s.estimator().unwrap().loop_io().building;
        assert_eq!(
            fitted.storey_stiffness_n_per_m,
            new.storey_stiffness_n_per_m
        );
        // The run's stored design names the version (no dtop_twin_model: nothing switched).
        let chunks = s.handle(&samples(&simulate(1)[0]), Instant::now());
        let recs = records(&chunks[0].lines);
        assert!(!recs.contains_key(MODEL_MEASUREMENT));
        let birth_record = BirthRecord::from_row(&recs[BIRTH_MEASUREMENT][0]).unwrap();
        assert_eq!(birth_record.design.model.as_deref(), Some("lab@4"));
        assert_eq!(birth_record.design.building, new);
        assert_eq!(
            s.stats(Instant::now()).adoption.model,
            ModelInUse::Catalogue {
                name: "lab".into(),
                version: 4,
                since_sample: None
            }
        );
    }
}
