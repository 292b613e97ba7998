//! What one daemon guard has seen: the ids of the sessions its daemon reported and the
//! identities of every process the harness ever observed in each. Assertions use it to catch
//! unreaped zombies (which no longer carry their marker), and the leak guard uses it to find
//! what to kill if the daemon left anything behind.

use crate::procfs::{ProcId, ProcInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Tracked {
    sessions: Mutex<BTreeMap<String, BTreeSet<ProcId>>>,
}

impl Tracked {
    /// Remembers a session id the daemon reported.
    pub fn note_session(&self, id: &str) {
        self.lock().entry(id.to_owned()).or_default();
    }

    /// Remembers processes observed in `session`.
    pub fn note_processes<'a>(&self, session: &str, procs: impl IntoIterator<Item = &'a ProcInfo>) {
        self.lock()
            .entry(session.to_owned())
            .or_default()
            .extend(procs.into_iter().map(ProcInfo::id));
    }

    /// Every session id seen so far.
    pub fn session_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The process identities observed in `session`.
    pub fn identities(&self, session: &str) -> Vec<ProcId> {
        self.lock()
            .get(session)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Notes every session id in a response's `result` (`session` or `sessions`).
    pub fn note_result(&self, result: &serde_json::Value) {
        if let Some(id) = result.pointer("/session/id").and_then(|v| v.as_str()) {
            self.note_session(id);
        }
        if let Some(list) = result.get("sessions").and_then(|v| v.as_array()) {
            for id in list.iter().filter_map(|s| s.get("id")?.as_str()) {
                self.note_session(id);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, BTreeSet<ProcId>>> {
        // A panicking test must not make cleanup panic too.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}
