//! This relay's view of the participants other relays hold, as a sans-IO core: presence
//! messages and room records in, changes to announce to the local participants out.
//!
//! A room is tracked while this relay has a participant in it (or one joining). Presence
//! messages that arrive while the room's record is being read are held and replayed on top of
//! the record, so that the view converges whichever arrived first: every relay writes its
//! change to the record before it publishes the presence message for it.

use std::collections::HashMap;

use chinwag_proto::{ParticipantId, Peer, PeerState};
use serde::{Deserialize, Serialize};

use super::record::{Member, PasswordHash, RoomRecord};
use crate::rooms::JoinRefusal;

/// What relays tell each other about their participants, on the room's presence subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Presence {
    /// Joined, or (again, after an outage) still here: an upsert.
    Joined {
        node: String,
        peer: Peer,
    },
    Left {
        node: String,
        id: ParticipantId,
    },
    State {
        node: String,
        state: PeerState,
    },
}

/// A change the local participants of a room are to be told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Joined(Peer),
    Left(ParticipantId),
    State(PeerState),
}

#[derive(Debug, Default)]
pub struct Roster {
    rooms: HashMap<String, RemoteRoom>,
}

#[derive(Debug, Default)]
struct RemoteRoom {
    /// Local participants in the room, and joins on their way.
    users: usize,
    /// Whether `peers` reflects a record; until then presence is held in `pending`.
    synced: bool,
    pending: Vec<Presence>,
    peers: Vec<Member>,
    /// The room's password as of the last record, for admitting joins while NATS is away.
    password: Option<PasswordHash>,
}

impl Roster {
    /// Starts or keeps tracking `room` for one more local user.
    pub fn acquire(&mut self, room: &str) {
        self.rooms.entry(room.to_owned()).or_default().users += 1;
    }

    /// One local user fewer; the room is forgotten with its last.
    pub fn release(&mut self, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.users = entry.users.saturating_sub(1);
            if entry.users == 0 {
                self.rooms.remove(room);
            }
        }
    }

    pub fn is_tracked(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    pub fn is_synced(&self, room: &str) -> bool {
        self.rooms.get(room).is_some_and(|entry| entry.synced)
    }

    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// Applies a presence message from another relay.
    pub fn handle_presence(&mut self, room: &str, presence: Presence) -> Vec<Change> {
        let Some(entry) = self.rooms.get_mut(room) else { return Vec::new() };
        if !entry.synced {
            entry.pending.push(presence);
            return Vec::new();
        }
        entry.apply(presence).into_iter().collect()
    }

    /// Holds presence for `room` until [`Roster::sync`]: its record is about to be read.
    pub fn begin_sync(&mut self, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.synced = false;
        }
    }

    /// Takes the other relays' members from `record` (those on live relays), then replays
    /// what arrived since [`Roster::begin_sync`].
    pub fn sync(
        &mut self,
        room: &str,
        record: Option<&RoomRecord>,
        me: &str,
        alive: impl Fn(&str) -> bool,
    ) -> Vec<Change> {
        let Some(entry) = self.rooms.get_mut(room) else { return Vec::new() };
        let fresh: Vec<Member> = record
            .into_iter()
            .flat_map(|record| record.remote_members(me))
            .filter(|member| alive(&member.node))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for old in &entry.peers {
            if !fresh.iter().any(|member| member.peer.id == old.peer.id) {
                changes.push(Change::Left(old.peer.id));
            }
        }
        for member in &fresh {
            match entry.peers.iter().find(|old| old.peer.id == member.peer.id) {
                None => changes.push(Change::Joined(member.peer.clone())),
                Some(old) if old.peer != member.peer => changes.push(Change::State(state_of(&member.peer))),
                Some(_) => {}
            }
        }
        entry.peers = fresh;
        entry.password = record.and_then(|record| record.password.clone());
        entry.synced = true;
        for presence in std::mem::take(&mut entry.pending) {
            changes.extend(entry.apply(presence));
        }
        changes
    }

    /// Ends a sync whose record could not be read: keeps the peers as they were and replays
    /// what arrived meanwhile.
    pub fn end_sync(&mut self, room: &str) -> Vec<Change> {
        let Some(entry) = self.rooms.get_mut(room) else { return Vec::new() };
        entry.synced = true;
        std::mem::take(&mut entry.pending).into_iter().filter_map(|presence| entry.apply(presence)).collect()
    }

    /// Removes every participant of a relay that died; returns them by room.
    pub fn node_dead(&mut self, node: &str) -> Vec<(String, ParticipantId)> {
        let mut gone = Vec::new();
        for (room, entry) in &mut self.rooms {
            entry.peers.retain(|member| {
                let dead = member.node == node;
                if dead {
                    gone.push((room.clone(), member.peer.id));
                }
                !dead
            });
        }
        gone
    }

    /// The relays holding participants in the tracked rooms.
    pub fn nodes(&self) -> std::collections::HashSet<&str> {
        self.rooms.values().flat_map(|entry| entry.peers.iter().map(|member| member.node.as_str())).collect()
    }

    /// The participants other relays hold in `room`.
    pub fn peers(&self, room: &str) -> impl Iterator<Item = &Peer> {
        self.rooms.get(room).into_iter().flat_map(|entry| entry.peers.iter().map(|member| &member.peer))
    }

    /// The room's password as of its last record.
    pub fn password(&self, room: &str) -> Option<&PasswordHash> {
        self.rooms.get(room).and_then(|entry| entry.password.as_ref())
    }

    pub fn remote_count(&self, room: &str) -> usize {
        self.rooms.get(room).map_or(0, |entry| entry.peers.len())
    }

    /// Admits a join from what this relay last knew of the room, for when the record cannot be
    /// read. `None` when the relay knows nothing of the room.
    pub fn admit_offline(
        &self,
        room: &str,
        password: Option<&str>,
        locals: usize,
        max_per_room: usize,
    ) -> Option<Result<(), JoinRefusal>> {
        let entry = self.rooms.get(room).filter(|entry| entry.synced)?;
        Some(if !PasswordHash::admits(entry.password.as_ref(), password) {
            Err(JoinRefusal::WrongPassword)
        } else if locals + entry.peers.len() >= max_per_room {
            Err(JoinRefusal::RoomFull { max: max_per_room })
        } else {
            Ok(())
        })
    }
}

impl RemoteRoom {
    fn apply(&mut self, presence: Presence) -> Option<Change> {
        match presence {
            Presence::Joined { node, peer } => {
                match self.peers.iter_mut().find(|member| member.peer.id == peer.id) {
                    Some(member) if member.peer == peer => None,
                    Some(member) => {
                        member.peer = peer;
                        member.node = node;
                        Some(Change::State(state_of(&member.peer)))
                    }
                    None => {
                        self.peers.push(Member { peer: peer.clone(), node });
                        Some(Change::Joined(peer))
                    }
                }
            }
            Presence::Left { id, .. } => {
                let index = self.peers.iter().position(|member| member.peer.id == id)?;
                self.peers.remove(index);
                Some(Change::Left(id))
            }
            Presence::State { state, .. } => {
                let member = self.peers.iter_mut().find(|member| member.peer.id == state.id)?;
                if member.peer.muted == state.muted && member.peer.camera == state.camera {
                    return None;
                }
                member.peer.muted = state.muted;
                member.peer.camera = state.camera;
                Some(Change::State(state))
            }
        }
    }
}

fn state_of(peer: &Peer) -> PeerState {
    PeerState { id: peer.id, muted: peer.muted, camera: peer.camera }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u32) -> Peer {
        Peer { id: ParticipantId(id), name: format!("p{id}"), muted: false, camera: false }
    }

    fn record(members: &[(u32, &str)]) -> RoomRecord {
        RoomRecord {
            password: None,
            members: members.iter().map(|&(id, node)| Member { peer: peer(id), node: node.into() }).collect(),
        }
    }

    fn joined(id: u32, node: &str) -> Presence {
        Presence::Joined { node: node.into(), peer: peer(id) }
    }

    fn ids(roster: &Roster, room: &str) -> Vec<u32> {
        roster.peers(room).map(|peer| peer.id.0).collect()
    }

    #[test]
    fn a_synced_room_follows_presence_and_ignores_repeats() {
        let mut roster = Roster::default();
        roster.acquire("r");
        let changes = roster.sync("r", Some(&record(&[(1, "me"), (2, "b")])), "me", |_| true);
        assert_eq!(changes, vec![Change::Joined(peer(2))]);
        assert_eq!(ids(&roster, "r"), vec![2], "only other relays' members");
        assert_eq!(roster.handle_presence("r", joined(3, "c")), vec![Change::Joined(peer(3))]);
        assert!(roster.handle_presence("r", joined(3, "c")).is_empty(), "an upsert");
        let state = PeerState { id: ParticipantId(3), muted: true, camera: false };
        let change = roster.handle_presence("r", Presence::State { node: "c".into(), state });
        assert_eq!(change, vec![Change::State(state)]);
        let left = Presence::Left { node: "b".into(), id: ParticipantId(2) };
        assert_eq!(roster.handle_presence("r", left.clone()), vec![Change::Left(ParticipantId(2))]);
        assert!(roster.handle_presence("r", left).is_empty());
        assert!(roster.handle_presence("other", joined(9, "b")).is_empty(), "untracked rooms are ignored");
    }

    #[test]
    fn presence_during_a_sync_is_replayed_on_top_of_the_record() {
        let mut roster = Roster::default();
        roster.acquire("r");
        // Read before relay b removed participant 2 and published it; the message came first.
        assert!(
            roster.handle_presence("r", Presence::Left { node: "b".into(), id: ParticipantId(2) }).is_empty()
        );
        assert!(roster.handle_presence("r", joined(4, "b")).is_empty());
        let changes = roster.sync("r", Some(&record(&[(2, "b"), (3, "b")])), "me", |_| true);
        assert_eq!(ids(&roster, "r"), vec![3, 4]);
        assert_eq!(
            changes,
            vec![
                Change::Joined(peer(2)),
                Change::Joined(peer(3)),
                Change::Left(ParticipantId(2)),
                Change::Joined(peer(4))
            ]
        );
    }

    #[test]
    fn a_resync_reports_the_difference() {
        let mut roster = Roster::default();
        roster.acquire("r");
        roster.sync("r", Some(&record(&[(2, "b"), (3, "b")])), "me", |_| true);
        roster.begin_sync("r");
        let mut newer = record(&[(3, "b"), (5, "c"), (6, "dead")]);
        newer.members[0].peer.muted = true;
        let changes = roster.sync("r", Some(&newer), "me", |node| node != "dead");
        assert_eq!(
            changes,
            vec![
                Change::Left(ParticipantId(2)),
                Change::State(PeerState { id: ParticipantId(3), muted: true, camera: false }),
                Change::Joined(peer(5)),
            ]
        );
    }

    #[test]
    fn a_dead_relay_takes_its_participants_with_it() {
        let mut roster = Roster::default();
        roster.acquire("r");
        roster.acquire("s");
        roster.sync("r", Some(&record(&[(2, "b"), (3, "c")])), "me", |_| true);
        roster.sync("s", Some(&record(&[(4, "b")])), "me", |_| true);
        assert_eq!(roster.nodes(), ["b", "c"].into_iter().collect());
        let mut gone = roster.node_dead("b");
        gone.sort();
        assert_eq!(gone, vec![("r".into(), ParticipantId(2)), ("s".into(), ParticipantId(4))]);
        assert_eq!(ids(&roster, "r"), vec![3]);
    }

    #[test]
    fn rooms_are_forgotten_with_their_last_local_user() {
        let mut roster = Roster::default();
        roster.acquire("r");
        roster.acquire("r");
        roster.release("r");
        assert!(roster.is_tracked("r"));
        roster.release("r");
        assert!(!roster.is_tracked("r"));
    }

    #[test]
    fn offline_admission_uses_the_last_record() {
        let mut roster = Roster::default();
        assert_eq!(roster.admit_offline("r", None, 1, 3), None, "an unknown room cannot be judged");
        roster.acquire("r");
        let mut with_password = record(&[(2, "b")]);
        with_password.password = Some(PasswordHash::new([0; 16], "pw"));
        roster.sync("r", Some(&with_password), "me", |_| true);
        assert_eq!(roster.admit_offline("r", None, 1, 3), Some(Err(JoinRefusal::WrongPassword)));
        assert_eq!(roster.admit_offline("r", Some("pw"), 1, 3), Some(Ok(())));
        assert_eq!(roster.admit_offline("r", Some("pw"), 2, 3), Some(Err(JoinRefusal::RoomFull { max: 3 })));
    }
}
