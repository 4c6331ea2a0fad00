//! Owns one rig's live state as the server sees it: online or offline by birth and death with
//! session ordering, the birth's channels, the edge's and the twin's latest status (their own
//! accounting, never recounted here), the sliding windows of measured and estimated frames,
//! and the summary browsers get every second. Pure: time is passed in, output is returned.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use dtop_proto::command::ack_status_name;
use dtop_proto::v1::{ChannelKind, CommandAck, RigBirth, RigDeath, SampleBlock, TwinState};
use serde_json::{Value, json};

use super::frame::{self, FrameKind};
use super::window::{Window, rms_by_floor};

/// What the live state sends to the browsers watching a rig.
#[derive(Debug, Clone)]
pub enum Out {
    /// A binary frame of measured samples.
    Samples(Bytes),
    /// A binary frame of the twin's estimate.
    Estimate(Bytes),
    /// The rig's summary (JSON `{"type":"status",...}`).
    Status(Arc<str>),
    /// The rig's channels changed (JSON `{"type":"meta",...}`): a new birth.
    Meta(Arc<str>),
    /// A command acknowledgement (JSON `{"type":"ack",...}`).
    Ack(Arc<str>),
    /// The rig's latest live CBC run (JSON `{"type":"cbc","run":{...}}`, the twin's status).
    Cbc(Arc<str>),
}

/// Why a rig has no DVF gain limit to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitUnknown {
    /// The twin has not published this rig's status (yet).
    NoTwinStatus,
    /// The twin's status says it accepts no gain, and why.
    Refused(String),
}

/// One rig.
#[derive(Debug, Clone)]
pub struct RigLive {
    rig: String,
    birth: Option<RigBirth>,
    online: bool,
    /// Session of the newest birth or death seen; older deaths are stale.
    session: Option<u64>,
    edge_status: Option<Value>,
    twin_status: Option<Value>,
    twin_state: Option<TwinState>,
    /// The twin's latest live CBC run, as sent to browsers.
    cbc: Option<Arc<str>>,
    /// Time of the newest measured sample, ns since the Unix epoch.
    last_sample_ns: Option<u64>,
    /// Server wall clock when the newest live block arrived, ns.
    last_arrival_ns: Option<u64>,
    /// When data stopped, while it has (server wall clock, ns).
    stale_since_ns: Option<u64>,
    stale_after_ns: u64,
    samples: Window,
    estimates: Window,
    /// Blocks that arrived before any birth (their channels cannot be scaled).
    blocks_before_birth: u64,
}

fn text(value: &Value) -> Arc<str> {
    Arc::from(value.to_string())
}

fn kind_name(kind: i32) -> &'static str {
    match ChannelKind::try_from(kind).unwrap_or(ChannelKind::Unspecified) {
        ChannelKind::Acceleration => "acceleration",
        ChannelKind::Force => "force",
        ChannelKind::Displacement => "displacement",
        ChannelKind::Velocity => "velocity",
        ChannelKind::Current => "current",
        ChannelKind::Other | ChannelKind::Unspecified => "other",
    }
}

impl RigLive {
    /// A rig not heard from yet; windows span `window_ns` of sample time; data older than
    /// `stale_after_ns` is stale.
    pub fn new(rig: &str, window_ns: u64, stale_after_ns: u64) -> Self {
        Self {
            rig: rig.to_owned(),
            birth: None,
            online: false,
            session: None,
            edge_status: None,
            twin_status: None,
            twin_state: None,
            cbc: None,
            last_sample_ns: None,
            last_arrival_ns: None,
            stale_since_ns: None,
            stale_after_ns,
            samples: Window::new(window_ns),
            estimates: Window::new(window_ns),
            blocks_before_birth: 0,
        }
    }

    /// The latest birth.
    pub fn birth(&self) -> Option<&RigBirth> {
        self.birth.as_ref()
    }

    /// A birth: newer sessions replace the channels and clear the windows.
    pub fn on_birth(&mut self, birth: RigBirth) -> Vec<Out> {
        if self.session.is_some_and(|s| birth.session < s) {
            return Vec::new();
        }
        let new_session = self.session != Some(birth.session);
        self.session = Some(birth.session);
        self.online = true;
        if new_session {
            self.samples.clear();
            self.estimates.clear();
        }
        self.birth = Some(birth);
        vec![Out::Meta(text(&self.meta()))]
    }

    /// A death of this session or a later one marks the rig offline; an older one is stale.
    pub fn on_death(&mut self, death: &RigDeath) -> Vec<Out> {
        if self.session.is_some_and(|s| death.session < s) {
            return Vec::new();
        }
        self.session = Some(death.session);
        self.online = false;
        Vec::new()
    }

    /// A block of samples, scaled with the birth's channels, kept and forwarded. Backfill is
    /// not live and not shown.
    pub fn on_samples(&mut self, block: &SampleBlock, now_ns: u64) -> Vec<Out> {
        let Some(birth) = &self.birth else {
            self.blocks_before_birth += 1;
            return Vec::new();
        };
        if block.backfill {
            return Vec::new();
        }
        let f = frame::from_block(block, &birth.channels);
        let n = f.samples() as u64;
        let bytes = frame::encode(&f);
        let last = block.first_timestamp_ns + n.saturating_sub(1) * block.sample_period_ns;
        self.last_sample_ns = Some(self.last_sample_ns.map_or(last, |l| l.max(last)));
        self.last_arrival_ns = Some(now_ns);
        self.stale_since_ns = None;
        self.samples.push(f, bytes.clone());
        vec![Out::Samples(bytes)]
    }

    /// The twin's estimate: kept and forwarded.
    pub fn on_twin_state(&mut self, state: TwinState) -> Vec<Out> {
        let f = frame::from_twin_state(&state);
        let bytes = frame::encode(&f);
        self.estimates.push(f, bytes.clone());
        self.twin_state = Some(state);
        vec![Out::Estimate(bytes)]
    }

    /// The edge's status JSON (kept for the next summary).
    pub fn on_edge_status(&mut self, status: Value) {
        self.edge_status = Some(status);
    }

    /// The twin's status JSON for this rig (kept for the next summary).
    pub fn on_twin_status(&mut self, status: Value) {
        self.twin_status = Some(status);
    }

    /// The twin's latest live CBC run of this rig: kept for new watchers and forwarded.
    pub fn on_twin_cbc(&mut self, run: Value) -> Vec<Out> {
        let out = text(&json!({ "type": "cbc", "rig": self.rig, "run": run }));
        self.cbc = Some(Arc::clone(&out));
        vec![Out::Cbc(out)]
    }

    /// The DVF gain limit the twin published in its latest status of this rig.
    ///
    /// # Errors
    /// [`LimitUnknown`]: no status yet, or the twin's reason for accepting no gain.
    pub fn gain_limit(&self) -> Result<super::GainLimit, LimitUnknown> {
        let status = self
            .twin_status
            .as_ref()
            .ok_or(LimitUnknown::NoTwinStatus)?;
        match status.get("dvf_limit") {
            Some(limit) if !limit.is_null() => serde_json::from_value(limit.clone()).map_err(|e| {
                LimitUnknown::Refused(format!("its published limit is unreadable ({e})"))
            }),
            _ => Err(LimitUnknown::Refused(
                status
                    .get("dvf_limit_unavailable")
                    .and_then(Value::as_str)
                    .unwrap_or("the twin's status names no DVF gain limit for it")
                    .to_owned(),
            )),
        }
    }

    /// A command acknowledgement, forwarded as it comes.
    pub fn on_ack(&self, ack: &CommandAck) -> Vec<Out> {
        vec![Out::Ack(text(&json!({
            "type": "ack",
            "rig": self.rig,
            "command_id": ack.command_id,
            "status": ack_status_name(ack),
            "applied_at_sample_index": ack.applied_at_sample_index,
            "reason": ack.reason,
        })))]
    }

    /// Once a second: the summary, and whether data stopped.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Out> {
        if let Some(arrived) = self.last_arrival_ns
            && self.stale_since_ns.is_none()
            && now_ns.saturating_sub(arrived) > self.stale_after_ns
        {
            self.stale_since_ns = Some(arrived);
        }
        vec![Out::Status(text(&self.summary(now_ns)))]
    }

    /// The snapshot a new browser gets: channels, summary, then the windows' frames.
    pub fn snapshot(&self, now_ns: u64) -> Vec<Out> {
        let mut out = vec![
            Out::Meta(text(&self.meta())),
            Out::Status(text(&self.summary(now_ns))),
        ];
        out.extend(self.cbc.iter().cloned().map(Out::Cbc));
        out.extend(self.samples.frames().cloned().map(Out::Samples));
        out.extend(self.estimates.frames().cloned().map(Out::Estimate));
        out
    }

    /// The channels, as the page needs them to label frames.
    pub fn meta(&self) -> Value {
        let channels: Vec<Value> = self
            .birth
            .iter()
            .flat_map(|b| &b.channels)
            .map(|c| {
                json!({
                    "id": c.id, "name": c.name, "kind": kind_name(c.kind), "unit": c.unit,
                    "floor": c.floor, "stream_id": c.stream_id, "sample_rate_hz": c.sample_rate_hz,
                })
            })
            .collect();
        json!({
            "type": "meta",
            "rig": self.rig,
            "session": self.session,
            "floors": self.birth.as_ref().map(|b| b.floors),
            "actuator_floor": self.birth.as_ref().and_then(|b| b.actuator.as_ref()).map(|a| a.floor),
            "max_force_n": self.birth.as_ref().and_then(|b| b.actuator.as_ref()).map(|a| a.max_force_n),
            "channels": channels,
            "window_s": self.samples_span_s(),
            "frame": {"displacement_id": frame::DISPLACEMENT_ID, "velocity_id": frame::VELOCITY_ID,
                      "samples_kind": FrameKind::Samples as u8, "estimate_kind": FrameKind::Estimate as u8},
        })
    }

    fn samples_span_s(&self) -> f64 {
        self.samples.span_ns() as f64 / 1e9
    }

    /// The summary browsers get every second: the rig's own and the twin's accounting.
    pub fn summary(&self, now_ns: u64) -> Value {
        let edge = self.edge_status.as_ref();
        let twin = self.twin_status.as_ref();
        let at = |v: Option<&Value>, path: &[&str]| -> Value {
            let mut cur = match v {
                Some(v) => v,
                None => return Value::Null,
            };
            for key in path {
                match cur.get(key) {
                    Some(next) => cur = next,
                    None => return Value::Null,
                }
            }
            cur.clone()
        };
        let accel_floors: BTreeMap<u16, u32> = self
            .birth
            .iter()
            .flat_map(|b| &b.channels)
            .filter(|c| c.kind == ChannelKind::Acceleration as i32 && c.floor > 0)
            .filter_map(|c| u16::try_from(c.id).ok().map(|id| (id, c.floor)))
            .collect();
        let floor_rms = rms_by_floor(&self.samples.rms_by_channel(), &accel_floors);
        let sample_rate_hz = self
            .birth
            .as_ref()
            .and_then(|b| b.channels.iter().find(|c| c.stream_id == 0))
            .map(|c| c.sample_rate_hz);
        let safety_state = match at(edge, &["safety_state"]) {
            Value::Null => self
                .birth
                .as_ref()
                .map_or(Value::Null, |b| Value::from(b.safety_state.clone())),
            v => v,
        };
        let edge_loop = at(edge, &["inner_loop", "running"]).as_bool();
        let twin_loop = self.twin_state.as_ref().map(|s| s.controller_active);
        json!({
            "type": "status",
            "rig": self.rig,
            "now_ns": now_ns,
            "online": self.online,
            "session": self.session,
            "sample_rate_hz": sample_rate_hz,
            "samples_per_s": at(twin, &["samples_per_s"]),
            "last_sample_ns": self.last_sample_ns,
            "data_age_s": self.last_sample_ns.map(|t| now_ns.saturating_sub(t) as f64 / 1e9),
            "stale_since_ns": self.stale_since_ns,
            "blocks_stored": at(twin, &["stored", "blocks_stored"]),
            "blocks_received": at(twin, &["blocks_received"]),
            "blocks_missing": at(twin, &["blocks_missing"]),
            "blocks_declared_lost": at(twin, &["blocks_declared_lost"]),
            "blocks_duplicate": at(twin, &["blocks_duplicate"]),
            "backlog_s": at(twin, &["stored", "backlog_s"]),
            "edge_backlog_s": at(edge, &["loss", "backlog_s"]),
            "storage": at(twin, &["storage"]),
            "storage_failing": at(twin, &["storage_failing"]),
            "safety_state": safety_state,
            "latch_cause": at(edge, &["latch_cause"]),
            "controller": self.twin_state.as_ref().map(|s| s.controller.clone()),
            "controller_running": edge_loop.unwrap_or(false) || twin_loop.unwrap_or(false),
            "edge_loop_running": edge_loop,
            "floor_rms_m_s2": floor_rms,
            "twin_floor_rms_m_s2": self.twin_state.as_ref().map(|s| {
                s.floors.iter().map(|f| (f.floor, f.accel_rms_m_s2)).collect::<BTreeMap<_, _>>()
            }),
            "blocks_before_birth": self.blocks_before_birth,
            "dvf_limit": at(twin, &["dvf_limit"]),
            "dvf_limit_unavailable": match self.gain_limit() {
                Ok(_) => Value::Null,
                Err(LimitUnknown::NoTwinStatus) => Value::from("no status from the twin yet"),
                Err(LimitUnknown::Refused(why)) => Value::from(why),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use dtop_proto::v1::{Channel, ChannelSamples};

    fn birth(session: u64) -> RigBirth {
        RigBirth {
            rig_id: "r1".into(),
            session,
            floors: 1,
            channels: vec![Channel {
                id: 1,
                name: "floor1_accel".into(),
                kind: ChannelKind::Acceleration as i32,
                scale: 1.0,
                floor: 1,
                sample_rate_hz: 1000.0,
                ..Channel::default()
            }],
            ..RigBirth::default()
        }
    }

    fn block(first: u64, raw: Vec<i32>) -> SampleBlock {
        SampleBlock {
            rig_id: "r1".into(),
            first_sample_index: first,
            first_timestamp_ns: first * 1_000_000,
            sample_period_ns: 1_000_000,
            channels: vec![ChannelSamples { channel_id: 1, raw }],
            ..SampleBlock::default()
        }
    }

    #[test]
    fn a_death_of_an_older_session_does_not_take_the_rig_offline() {
        let mut r = RigLive::new("r1", 10_000_000_000, 2_000_000_000);
        r.on_birth(birth(5));
        r.on_death(&RigDeath {
            rig_id: "r1".into(),
            session: 4,
            reason: String::new(),
        });
        assert_eq!(r.summary(0)["online"], true);
        r.on_death(&RigDeath {
            rig_id: "r1".into(),
            session: 5,
            reason: String::new(),
        });
        assert_eq!(r.summary(0)["online"], false);
        // A late birth of an older session is ignored too.
        assert!(r.on_birth(birth(4)).is_empty());
        assert_eq!(r.summary(0)["online"], false);
    }

    #[test]
    fn the_gain_limit_is_the_one_the_twin_published_or_its_reason_for_none() {
        let mut r = RigLive::new("r1", 10_000_000_000, 2_000_000_000);
        assert_eq!(r.gain_limit(), Err(LimitUnknown::NoTwinStatus));
        assert_eq!(
            r.summary(0)["dvf_limit_unavailable"],
            "no status from the twin yet"
        );
        r.on_twin_status(json!({"dvf_limit": null,
            "dvf_limit_unavailable": "twin-hosted control is disabled (control.enabled = false)"}));
        assert_eq!(
            r.gain_limit(),
            Err(LimitUnknown::Refused(
                "twin-hosted control is disabled (control.enabled = false)".into()
            ))
        );
        let published = json!({"floor": 3, "critical_gain_n_s_per_m": 17.9,
            "max_fraction_of_critical": 0.5, "max_gain_n_s_per_m": 8.95});
        r.on_twin_status(json!({"dvf_limit": published, "dvf_limit_unavailable": null}));
        assert_eq!(
            r.gain_limit(),
            Ok(super::super::GainLimit {
                floor: 3,
                critical_gain_n_s_per_m: 17.9,
                max_fraction_of_critical: 0.5,
                max_gain_n_s_per_m: 8.95,
            })
        );
        let s = r.summary(0);
        assert_eq!(s["dvf_limit"], published);
        assert_eq!(s["dvf_limit_unavailable"], Value::Null);
    }

    #[test]
    fn goes_stale_when_blocks_stop_and_recovers_with_the_next_block() {
        let mut r = RigLive::new("r1", 10_000_000_000, 2_000_000_000);
        r.on_birth(birth(1));
        assert_eq!(r.on_samples(&block(0, vec![3, -3]), 1_000).len(), 1);
        r.tick(2_000_001_001);
        assert_eq!(r.summary(0)["stale_since_ns"], 1_000);
        r.on_samples(&block(2, vec![3, -3]), 3_000_000_000);
        assert_eq!(r.summary(0)["stale_since_ns"], Value::Null);
        assert_eq!(r.summary(0)["floor_rms_m_s2"]["1"], 3.0);
    }

    #[test]
    fn uses_the_twins_own_counters_and_a_snapshot_replays_the_window() {
        let mut r = RigLive::new("r1", 10_000_000_000, 2_000_000_000);
        assert!(
            r.on_samples(&block(0, vec![1]), 0).is_empty(),
            "no birth yet"
        );
        r.on_birth(birth(1));
        r.on_samples(&block(0, vec![1]), 0);
        r.on_samples(&block(1, vec![2]), 0);
        r.on_twin_status(json!({"blocks_missing": 7, "blocks_declared_lost": 2,
            "stored": {"blocks_stored": 40, "backlog_s": 0.5}}));
        let s = r.summary(0);
        assert_eq!(
            (
                &s["blocks_missing"],
                &s["blocks_declared_lost"],
                &s["blocks_stored"],
                &s["backlog_s"]
            ),
            (&json!(7), &json!(2), &json!(40), &json!(0.5))
        );
        assert_eq!(
            r.gain_limit(),
            Err(LimitUnknown::Refused(
                "the twin's status names no DVF gain limit for it".into()
            ))
        );
        let snap = r.snapshot(0);
        assert!(matches!(snap[0], Out::Meta(_)));
        assert_eq!(
            snap.iter().filter(|o| matches!(o, Out::Samples(_))).count(),
            2
        );
        assert_eq!(s["blocks_before_birth"], 1);
    }

    #[test]
    fn the_latest_live_cbc_run_is_forwarded_and_given_to_new_watchers() {
        let mut r = RigLive::new("lab-1", 10_000_000_000, 5_000_000_000);
        assert!(!r.snapshot(0).iter().any(|o| matches!(o, Out::Cbc(_))));
        r.on_twin_cbc(json!({"run": 1, "state": "running", "points": []}));
        let out =
            r.on_twin_cbc(json!({"run": 1, "state": "completed", "points": [{"forcing_n": 1.5}]}));
        let [Out::Cbc(t)] = out.as_slice() else {
            panic!("{out:?}")
        };
        let v: Value = serde_json::from_str(t).unwrap();
        assert_eq!(
            (&v["type"], &v["rig"], &v["run"]["state"]),
            (&json!("cbc"), &json!("lab-1"), &json!("completed"))
        );
        let cbc: Vec<_> = r
            .snapshot(0)
            .into_iter()
            .filter_map(|o| match o {
                Out::Cbc(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(cbc, vec![Arc::clone(t)], "only the latest");
    }
}
