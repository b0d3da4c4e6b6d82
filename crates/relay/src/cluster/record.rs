//! A room's cluster-wide record, as a sans-IO core: who is in the room on which node, and the
//! room's password (salted and hashed). The shell keeps one record per room in NATS JetStream
//! key-value and changes it only by compare-and-set, so every decision here sees one
//! consistent version; this module decides, given that version, what the next one is.

use chinwag_proto::{ParticipantId, Peer, PeerState};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::rooms::JoinRefusal;

/// A room as the whole cluster sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// Set by the first joiner; `None` is an open room.
    pub password: Option<PasswordHash>,
    /// In order of joining.
    pub members: Vec<Member>,
}

/// A participant and the relay instance that holds its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer: Peer,
    /// The instance id of the relay (its node id and a per-start suffix).
    pub node: String,
}

/// A password as stored outside the relay: SHA-256 over a random salt and the password, so
/// that the NATS store never holds one in the clear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    pub salt: String,
    pub sha256: String,
}

impl PasswordHash {
    /// Hashes `password` with `salt` (random bytes the shell chose).
    pub fn new(salt: [u8; 16], password: &str) -> Self {
        let salt = hex(&salt);
        let sha256 = hex(&Sha256::new().chain_update(&salt).chain_update(password).finalize());
        Self { salt, sha256 }
    }

    /// Whether a room with `expected` (`None`: an open room) lets in someone giving `given`.
    pub fn admits(expected: Option<&PasswordHash>, given: Option<&str>) -> bool {
        match (expected, given.filter(|given| !given.is_empty())) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(hash), Some(given)) => hash.matches(given),
        }
    }

    /// Whether `password` is the one hashed, comparing without an early exit.
    pub fn matches(&self, password: &str) -> bool {
        let given = hex(&Sha256::new().chain_update(&self.salt).chain_update(password).finalize());
        given.len() == self.sha256.len()
            && given.bytes().zip(self.sha256.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

/// Everything a join needs besides the record.
#[derive(Debug)]
pub struct JoinRequest<'a> {
    pub name: &'a str,
    pub password: Option<&'a str>,
    pub node: &'a str,
    pub max_per_room: usize,
    /// Random salt for the room's password hash, used only when this join creates the room.
    pub salt: [u8; 16],
}

impl RoomRecord {
    /// Drops members whose relay is dead. A room left with nobody is a new room: its old
    /// password goes with it.
    pub fn without_dead(mut self, alive: impl Fn(&str) -> bool) -> Option<RoomRecord> {
        self.members.retain(|member| alive(&member.node));
        (!self.members.is_empty()).then_some(self)
    }

    /// Admits a participant under `id` (which the caller picked so that it is free on its own
    /// relay; [`RoomRecord::is_free`] says whether the room has it), or says why not.
    pub fn admit(
        record: Option<RoomRecord>,
        id: ParticipantId,
        request: &JoinRequest<'_>,
    ) -> Result<RoomRecord, JoinRefusal> {
        let password = request.password.filter(|password| !password.is_empty());
        let mut record = match record {
            Some(record) => {
                if !PasswordHash::admits(record.password.as_ref(), password) {
                    return Err(JoinRefusal::WrongPassword);
                }
                if record.members.len() >= request.max_per_room {
                    return Err(JoinRefusal::RoomFull { max: request.max_per_room });
                }
                record
            }
            None => RoomRecord {
                password: password.map(|password| PasswordHash::new(request.salt, password)),
                members: Vec::new(),
            },
        };
        debug_assert!(record.is_free(id));
        let peer = Peer { id, name: request.name.to_owned(), muted: false, camera: false };
        record.members.push(Member { peer, node: request.node.to_owned() });
        Ok(record)
    }

    pub fn is_free(&self, id: ParticipantId) -> bool {
        self.members.iter().all(|member| member.peer.id != id)
    }

    /// Removes a member; `None` when the room is now empty (and its record to be deleted).
    pub fn remove(mut self, id: ParticipantId) -> Option<RoomRecord> {
        self.members.retain(|member| member.peer.id != id);
        (!self.members.is_empty()).then_some(self)
    }

    pub fn set_state(&mut self, state: PeerState) {
        if let Some(member) = self.members.iter_mut().find(|member| member.peer.id == state.id) {
            member.peer.muted = state.muted;
            member.peer.camera = state.camera;
        }
    }

    /// Makes the record hold exactly `locals` for `node`, as they are now: after a NATS outage
    /// the record may have missed joins, leaves and state changes, or another relay may have
    /// taken this one for dead and removed its members. Limits are not checked: these people
    /// are in the call already.
    pub fn reconcile_node(record: Option<RoomRecord>, node: &str, locals: &[Peer]) -> Option<RoomRecord> {
        let mut record = record.unwrap_or_default();
        record.members.retain(|member| member.node != node || locals.iter().any(|l| l.id == member.peer.id));
        for local in locals {
            match record.members.iter_mut().find(|member| member.peer.id == local.id) {
                Some(member) => member.peer = local.clone(),
                None => record.members.push(Member { peer: local.clone(), node: node.to_owned() }),
            }
        }
        (!record.members.is_empty()).then_some(record)
    }

    /// The members on other relays.
    pub fn remote_members<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.members.iter().filter(move |member| member.node != node)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(name: &'a str, password: Option<&'a str>, node: &'a str) -> JoinRequest<'a> {
        JoinRequest { name, password, node, max_per_room: 3, salt: [7; 16] }
    }

    fn ids(record: &RoomRecord) -> Vec<u32> {
        record.members.iter().map(|member| member.peer.id.0).collect()
    }

    #[test]
    fn the_first_joiner_sets_the_password_and_it_is_not_stored_in_the_clear() {
        let record = RoomRecord::admit(None, ParticipantId(1), &request("A", Some("s3cret"), "n1")).unwrap();
        let hash = record.password.clone().unwrap();
        assert!(!serde_json::to_string(&record).unwrap().contains("s3cret"));
        assert!(hash.matches("s3cret"));
        assert!(!hash.matches("s3cres") && !hash.matches("s3cret!") && !hash.matches(""));
        let refused = RoomRecord::admit(Some(record.clone()), ParticipantId(2), &request("B", None, "n2"));
        assert_eq!(refused, Err(JoinRefusal::WrongPassword));
        let refused =
            RoomRecord::admit(Some(record.clone()), ParticipantId(2), &request("B", Some("nope"), "n2"));
        assert_eq!(refused, Err(JoinRefusal::WrongPassword));
        let record = RoomRecord::admit(Some(record), ParticipantId(2), &request("B", Some("s3cret"), "n2"));
        assert_eq!(ids(&record.unwrap()), vec![1, 2]);
    }

    #[test]
    fn same_password_hashes_differently_with_another_salt() {
        let a = PasswordHash::new([1; 16], "pw");
        let b = PasswordHash::new([2; 16], "pw");
        assert_ne!(a.sha256, b.sha256);
        assert!(a.matches("pw") && b.matches("pw"));
    }

    #[test]
    fn the_limit_counts_every_node() {
        let mut record = None;
        for (id, node) in [(1, "n1"), (2, "n2"), (3, "n1")] {
            record = Some(RoomRecord::admit(record, ParticipantId(id), &request("x", None, node)).unwrap());
        }
        let refused = RoomRecord::admit(record.clone(), ParticipantId(4), &request("x", None, "n2"));
        assert_eq!(refused, Err(JoinRefusal::RoomFull { max: 3 }));
        let record = record.unwrap().remove(ParticipantId(2)).unwrap();
        assert!(RoomRecord::admit(Some(record), ParticipantId(4), &request("x", None, "n2")).is_ok());
    }

    #[test]
    fn dead_nodes_leave_and_an_emptied_room_forgets_its_password() {
        let record = RoomRecord::admit(None, ParticipantId(1), &request("A", Some("pw"), "dead")).unwrap();
        let record = RoomRecord::admit(Some(record), ParticipantId(2), &request("B", Some("pw"), "live"));
        let record = record.unwrap();
        let kept = record.clone().without_dead(|node| node == "live").unwrap();
        assert_eq!(ids(&kept), vec![2]);
        assert_eq!(record.clone().without_dead(|_| false), None);
        assert_eq!(record.remove(ParticipantId(1)).and_then(|r| r.remove(ParticipantId(2))), None);
    }

    #[test]
    fn reconciling_a_node_puts_back_its_members_and_drops_those_gone() {
        let record = RoomRecord::admit(None, ParticipantId(1), &request("A", None, "me")).unwrap();
        let record = RoomRecord::admit(Some(record), ParticipantId(2), &request("B", None, "other")).unwrap();
        let locals = [
            Peer { id: ParticipantId(5), name: "E".into(), muted: true, camera: false },
            Peer { id: ParticipantId(6), name: "F".into(), muted: false, camera: true },
        ];
        let record = RoomRecord::reconcile_node(Some(record), "me", &locals).unwrap();
        assert_eq!(ids(&record), vec![2, 5, 6]);
        assert!(record.members[1].peer.muted);
        assert_eq!(record.remote_members("me").map(|m| m.peer.id.0).collect::<Vec<_>>(), vec![2]);
        assert_eq!(RoomRecord::reconcile_node(None, "me", &[]), None);
    }

    #[test]
    fn state_changes_land_on_the_member() {
        let mut record = RoomRecord::admit(None, ParticipantId(1), &request("A", None, "n")).unwrap();
        record.set_state(PeerState { id: ParticipantId(1), muted: true, camera: true });
        record.set_state(PeerState { id: ParticipantId(9), muted: true, camera: true });
        assert!(record.members[0].peer.muted && record.members[0].peer.camera);
    }
}
