//! Owns operator commands at the edge: deciding what each `Command` on the rig's cmd topic asks
//! for (or why it is refused or expired), remembering every decision by command id so a
//! redelivered command is answered again and never applied twice, and the journal file that
//! carries those decisions across restarts. The actuator itself is the serial task's; this
//! module only says what to do.
//!
//! # Exactly once
//! A command is journalled as *pending* (fsynced) before it is handed to the serial task, and
//! as decided (fsynced) before its ack is published. A command id seen again is answered with
//! the journalled ack and not applied. If the edge dies between the two writes, the restarted
//! edge answers that id with REFUSED and says the command may or may not have taken effect:
//! it never applies it a second time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use dtop_proto::RigId;
use dtop_proto::v1::command::Kind;
use dtop_proto::v1::command_ack::Status;
use dtop_proto::v1::{Command, CommandAck, excitation};
use serde::{Deserialize, Serialize};

/// Decisions remembered (and kept in the journal) per rig.
pub const REMEMBERED_COMMANDS: usize = 4096;
/// Longest accepted command id, bytes.
pub const MAX_COMMAND_ID_BYTES: usize = 128;

/// What an admitted command asks the rig to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Arm (true) or disarm (false) the actuator.
    ActuatorEnable(bool),
    /// Hold an open-loop force, N.
    SetDrive {
        force_n: f64,
    },
    /// Latch the actuator off until a reset.
    SafetyStop,
    SafetyReset,
    /// Publish the birth manifest again.
    Rebirth,
    /// Samples per block from the next block on.
    SetAcquisition {
        block_samples: u32,
    },
    /// Start or stop the rig's shaker.
    Excitation {
        waveform: excitation::Waveform,
        amplitude_n: f64,
        frequency_hz: f64,
        frequency_end_hz: f64,
    },
}

/// What to do with a received command.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Answer with `ack` now. `fresh` is false for a command already decided (the journalled
    /// ack again); a fresh answer is journalled first.
    Answer { ack: CommandAck, fresh: bool },
    /// Not the edge's to answer (`SetControl` and `RunCbc` are the twin's).
    NotMine,
    /// Journal it as pending, then apply it.
    Apply { id: String, action: Action },
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub id: String,
    /// `pending`, or the `CommandAck.Status` name of the decision.
    pub status: String,
    #[serde(default)]
    pub applied_at_sample_index: u64,
    #[serde(default)]
    pub reason: String,
}

const PENDING: &str = "pending";

/// Every decided command id, newest last, and the ids handed over but not yet decided.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    order: VecDeque<String>,
    decided: HashMap<String, CommandAck>,
    pending: HashSet<String>,
}

impl Ledger {
    /// Rebuilds the ledger from journal lines, oldest first. An id left pending by a crash is
    /// decided as refused-with-doubt, and that decision is returned for the journal.
    pub fn restore(
        rig: &RigId,
        entries: impl IntoIterator<Item = JournalEntry>,
    ) -> (Self, Vec<JournalEntry>) {
        let mut ledger = Self::default();
        for entry in entries {
            if entry.status == PENDING {
                ledger.pending.insert(entry.id);
                continue;
            }
            let status = Status::from_str_name(&entry.status).unwrap_or(Status::Refused);
            ledger.pending.remove(&entry.id);
            ledger.remember(CommandAck {
                command_id: entry.id,
                rig_id: rig.to_string(),
                status: status as i32,
                applied_at_sample_index: entry.applied_at_sample_index,
                reason: entry.reason,
            });
        }
        let mut doubts = Vec::new();
        let mut orphans: Vec<String> = ledger.pending.drain().collect();
        orphans.sort();
        for id in orphans {
            let ack = refused(
                rig,
                &id,
                "the edge restarted after accepting this command and before confirming it; it \
                 may or may not have taken effect and is not applied again: check the rig's \
                 status and send a new command",
            );
            doubts.push(JournalEntry::of(&ack));
            ledger.remember(ack);
        }
        (ledger, doubts)
    }

    /// Decides what `command`, received on `rig`'s cmd topic at `now_unix_ns`, asks for.
    pub fn admit(&self, rig: &RigId, command: &Command, now_unix_ns: u64) -> Verdict {
        if matches!(command.kind, Some(Kind::SetControl(_) | Kind::RunCbc(_))) {
            return Verdict::NotMine;
        }
        if let Some(ack) = self.decided.get(&command.id) {
            return Verdict::Answer {
                ack: ack.clone(),
                fresh: false,
            };
        }
        let refuse = |why: String| Verdict::Answer {
            ack: refused(rig, &command.id, &why),
            fresh: true,
        };
        if command.id.is_empty() || command.id.len() > MAX_COMMAND_ID_BYTES {
            return refuse(format!(
                "the command id must be 1..={MAX_COMMAND_ID_BYTES} bytes"
            ));
        }
        if self.pending.contains(&command.id) {
            return refuse("a command with this id is being applied now".into());
        }
        if command.target_rig != rig.as_str() {
            return refuse(format!(
                "target_rig {:?} does not match the topic's rig {:?}",
                command.target_rig,
                rig.as_str()
            ));
        }
        if command.deadline_ns != 0 && now_unix_ns > command.deadline_ns {
            return Verdict::Answer {
                ack: CommandAck {
                    command_id: command.id.clone(),
                    rig_id: rig.to_string(),
                    status: Status::Expired as i32,
                    applied_at_sample_index: 0,
                    reason: format!(
                        "the deadline passed {} ms before the edge received the command",
                        (now_unix_ns - command.deadline_ns) / 1_000_000
                    ),
                },
                fresh: true,
            };
        }
        let action = match &command.kind {
            None => return refuse("the command has no kind".into()),
            Some(Kind::SetControl(_) | Kind::RunCbc(_)) => return Verdict::NotMine,
            Some(Kind::ActuatorEnable(e)) => Action::ActuatorEnable(e.enabled),
            Some(Kind::SetDrive(d)) if !d.force_n.is_finite() => {
                return refuse(format!("force {} N is not finite", d.force_n));
            }
            Some(Kind::SetDrive(d)) => Action::SetDrive { force_n: d.force_n },
            Some(Kind::SafetyStop(_)) => Action::SafetyStop,
            Some(Kind::SafetyReset(_)) => Action::SafetyReset,
            Some(Kind::Rebirth(_)) => Action::Rebirth,
            Some(Kind::SetAcquisition(a)) => Action::SetAcquisition {
                block_samples: a.block_samples,
            },
            Some(Kind::Excitation(x)) => Action::Excitation {
                waveform: x.waveform(),
                amplitude_n: x.amplitude_n,
                frequency_hz: x.frequency_hz,
                frequency_end_hz: x.frequency_end_hz,
            },
        };
        Verdict::Apply {
            id: command.id.clone(),
            action,
        }
    }

    /// Notes that `id` was handed over for applying.
    pub fn begin(&mut self, id: &str) {
        self.pending.insert(id.to_owned());
    }

    /// Records a decision (applied, latched, refused or expired).
    pub fn decide(&mut self, ack: CommandAck) {
        self.pending.remove(&ack.command_id);
        self.remember(ack);
    }

    /// Decisions remembered, oldest first, for compacting the journal.
    pub fn entries(&self) -> impl Iterator<Item = JournalEntry> + '_ {
        self.order
            .iter()
            .filter_map(|id| self.decided.get(id))
            .map(JournalEntry::of)
    }

    pub fn len(&self) -> usize {
        self.decided.len()
    }

    pub fn is_empty(&self) -> bool {
        self.decided.is_empty()
    }

    fn remember(&mut self, ack: CommandAck) {
        if self.decided.contains_key(&ack.command_id) {
            self.decided.insert(ack.command_id.clone(), ack);
            return;
        }
        if self.order.len() == REMEMBERED_COMMANDS
            && let Some(oldest) = self.order.pop_front()
        {
            self.decided.remove(&oldest);
        }
        self.order.push_back(ack.command_id.clone());
        self.decided.insert(ack.command_id.clone(), ack);
    }
}

impl JournalEntry {
    /// The journal line of a decision.
    pub fn of(ack: &CommandAck) -> Self {
        Self {
            id: ack.command_id.clone(),
            status: ack.status().as_str_name().to_owned(),
            applied_at_sample_index: ack.applied_at_sample_index,
            reason: ack.reason.clone(),
        }
    }

    /// The journal line saying `id` is being applied.
    pub fn pending(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            status: PENDING.to_owned(),
            applied_at_sample_index: 0,
            reason: String::new(),
        }
    }
}

/// A refusal of command `id` on `rig`.
pub fn refused(rig: &RigId, id: &str, reason: &str) -> CommandAck {
    CommandAck {
        command_id: id.to_owned(),
        rig_id: rig.to_string(),
        status: Status::Refused as i32,
        applied_at_sample_index: 0,
        reason: reason.to_owned(),
    }
}

/// The append-only journal file, one JSON entry per line, each fsynced before it counts.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, restores the ledger from it, decides ids a
    /// crash left pending, and rewrites the file compacted to the remembered decisions.
    /// A torn last line (a crash mid-write) is skipped; any other bad line is an error.
    ///
    /// # Errors
    /// I/O errors, or a corrupt line before the last.
    pub fn open(path: &Path, rig: &RigId) -> io::Result<(Self, Ledger)> {
        let entries = match File::open(path) {
            Ok(f) => read_entries(BufReader::new(f), path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        // Doubts are decisions like any other; the compacted file below holds them.
        let (ledger, _doubts) = Ledger::restore(rig, entries);
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut out = File::create(&tmp)?;
            for entry in ledger.entries() {
                serde_json::to_writer(&mut out, &entry)?;
                out.write_all(b"\n")?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            // The rename is durable only once the directory is.
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((
            Self {
                path: path.to_owned(),
                file,
            },
            ledger,
        ))
    }

    /// Appends `entry` and waits until it is on disk.
    ///
    /// # Errors
    /// I/O errors; the entry may then not have been written.
    pub fn append(&mut self, entry: &JournalEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_entries(reader: impl BufRead, path: &Path) -> io::Result<Vec<JournalEntry>> {
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let last = lines.len().saturating_sub(1);
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<JournalEntry>(line) {
            Ok(e) => entries.push(e),
            Err(_) if i == last => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} line {}: {e}", path.display(), i + 1),
                ));
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use dtop_proto::v1::{RunCbc, SafetyStop, SetControl, SetDrive};

    fn rig() -> RigId {
        RigId::new("r1").unwrap()
    }

    fn command(id: &str, kind: Kind, deadline_ns: u64) -> Command {
        Command {
            id: id.into(),
            deadline_ns,
            target_rig: "r1".into(),
            issued_by: "test".into(),
            kind: Some(kind),
        }
    }

    fn applied(id: &str, at: u64) -> CommandAck {
        CommandAck {
            command_id: id.into(),
            rig_id: "r1".into(),
            status: Status::Applied as i32,
            applied_at_sample_index: at,
            reason: String::new(),
        }
    }

    #[test]
    fn a_decided_id_is_answered_again_and_not_applied() {
        let mut ledger = Ledger::default();
        let c = command("c1", Kind::SetDrive(SetDrive { force_n: 2.0 }), 0);
        assert!(matches!(ledger.admit(&rig(), &c, 5), Verdict::Apply { .. }));
        ledger.begin("c1");
        assert!(matches!(
            ledger.admit(&rig(), &c, 5),
            Verdict::Answer { fresh: true, ref ack } if ack.reason.contains("being applied")
        ));
        ledger.decide(applied("c1", 42));
        assert_eq!(
            ledger.admit(&rig(), &c, 5),
            Verdict::Answer {
                ack: applied("c1", 42),
                fresh: false
            }
        );
    }

    #[test]
    fn expired_foreign_and_non_finite_commands_are_answered_not_applied() {
        let ledger = Ledger::default();
        let late = command("late", Kind::SafetyStop(SafetyStop {}), 10);
        let Verdict::Answer { ack, fresh: true } = ledger.admit(&rig(), &late, 2_000_010) else {
            panic!()
        };
        assert_eq!(ack.status(), Status::Expired);
        let mut foreign = command("f", Kind::SafetyStop(SafetyStop {}), 0);
        foreign.target_rig = "r2".into();
        assert!(
            matches!(ledger.admit(&rig(), &foreign, 0), Verdict::Answer { ref ack, .. } if ack.status() == Status::Refused)
        );
        let nan = command("n", Kind::SetDrive(SetDrive { force_n: f64::NAN }), 0);
        assert!(
            matches!(ledger.admit(&rig(), &nan, 0), Verdict::Answer { ref ack, .. } if ack.reason.contains("not finite"))
        );
        let control = command("s", Kind::SetControl(SetControl::default()), 0);
        assert_eq!(ledger.admit(&rig(), &control, 0), Verdict::NotMine);
        let cbc = command("c", Kind::RunCbc(RunCbc::default()), 0);
        assert_eq!(ledger.admit(&rig(), &cbc, 0), Verdict::NotMine);
    }

    #[test]
    fn the_journal_survives_a_restart_and_settles_a_command_left_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commands.jsonl");
        {
            let (mut journal, mut ledger) = Journal::open(&path, &rig()).unwrap();
            assert!(ledger.is_empty());
            journal.append(&JournalEntry::pending("done")).unwrap();
            ledger.begin("done");
            journal
                .append(&JournalEntry::of(&applied("done", 7)))
                .unwrap();
            ledger.decide(applied("done", 7));
            // Killed here: accepted, never confirmed.
            journal.append(&JournalEntry::pending("torn")).unwrap();
        }
        // A crash mid-line leaves a torn tail, which is skipped.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"id\":\"half").unwrap();
        drop(f);
        let (_, ledger) = Journal::open(&path, &rig()).unwrap();
        let again =
            |id: &str| ledger.admit(&rig(), &command(id, Kind::SafetyStop(SafetyStop {}), 0), 0);
        assert_eq!(
            again("done"),
            Verdict::Answer {
                ack: applied("done", 7),
                fresh: false
            }
        );
        let Verdict::Answer { ack, fresh: false } = again("torn") else {
            panic!("a pending id must not be applied again")
        };
        assert_eq!(ack.status(), Status::Refused);
        assert!(ack.reason.contains("may or may not"), "{}", ack.reason);
        // The compacted file holds exactly the two decisions.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn remembers_a_bounded_number_of_decisions() {
        let mut ledger = Ledger::default();
        for i in 0..REMEMBERED_COMMANDS + 10 {
            ledger.decide(applied(&format!("c{i}"), i as u64));
        }
        assert_eq!(ledger.len(), REMEMBERED_COMMANDS);
        let c = command("c0", Kind::SafetyStop(SafetyStop {}), 0);
        assert!(matches!(ledger.admit(&rig(), &c, 0), Verdict::Apply { .. }));
    }
}
