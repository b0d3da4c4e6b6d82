//! Rooms and presence, as a sans-IO core: joins, leaves and state changes in, the answers and
//! the list of whom to tell out. It reads no clock and touches no socket.

use std::collections::HashMap;

use chinwag_proto::{ParticipantId, Peer, PeerState, StateUpdate};

/// Every room on the relay and who is in it.
///
/// **Invariant:** a room exists exactly while it has at least one member, and every member is
/// in exactly one room.
#[derive(Debug)]
pub struct Rooms {
    rooms: HashMap<String, Room>,
    room_of: HashMap<ParticipantId, String>,
    last_id: u32,
    max_per_room: usize,
}

#[derive(Debug)]
struct Room {
    /// Set by the first joiner; `None` is an open room.
    password: Option<String>,
    /// In order of joining.
    members: Vec<Peer>,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    WrongPassword,
    RoomFull { max: usize },
}

/// A successful join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub id: ParticipantId,
    /// The new member as the others see it.
    pub peer: Peer,
    /// Everyone who was already in the room; they are to be told of the new member.
    pub others: Vec<Peer>,
}

/// A member left; the others in `room` are to be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Left {
    pub room: String,
    pub peer: Peer,
    pub others: Vec<ParticipantId>,
}

impl Rooms {
    pub fn new(max_per_room: usize) -> Self {
        Self { rooms: HashMap::new(), room_of: HashMap::new(), last_id: 0, max_per_room }
    }

    /// Adds `name` to `room`, creating the room (with `password`, if any) when it is empty.
    /// An empty password is the same as none.
    pub fn handle_join(
        &mut self,
        room: &str,
        name: &str,
        password: Option<&str>,
    ) -> Result<Joined, JoinRefusal> {
        let password = password.filter(|password| !password.is_empty());
        if let Some(existing) = self.rooms.get(room) {
            if !same_password(existing.password.as_deref(), password) {
                return Err(JoinRefusal::WrongPassword);
            }
            if existing.members.len() >= self.max_per_room {
                return Err(JoinRefusal::RoomFull { max: self.max_per_room });
            }
        }
        let id = self.allocate_id();
        let peer = Peer { id, name: name.to_owned(), muted: false, camera: false };
        let entry = self
            .rooms
            .entry(room.to_owned())
            .or_insert_with(|| Room { password: password.map(str::to_owned), members: Vec::new() });
        let others = entry.members.clone();
        entry.members.push(peer.clone());
        self.room_of.insert(id, room.to_owned());
        Ok(Joined { id, peer, others })
    }

    /// Adds `name` to `room` under `id` without checking the password or the room's size: in
    /// a cluster the room's record decided that already, and chose the id.
    pub fn handle_admitted(&mut self, room: &str, name: &str, id: ParticipantId) -> Joined {
        debug_assert!(!self.room_of.contains_key(&id), "the caller checks that {id} is free");
        let peer = Peer { id, name: name.to_owned(), muted: false, camera: false };
        let entry =
            self.rooms.entry(room.to_owned()).or_insert_with(|| Room { password: None, members: Vec::new() });
        let others = entry.members.clone();
        entry.members.push(peer.clone());
        self.room_of.insert(id, room.to_owned());
        Joined { id, peer, others }
    }

    /// Removes `id` from its room, closing the room when it was the last one.
    pub fn handle_leave(&mut self, id: ParticipantId) -> Option<Left> {
        let room_name = self.room_of.remove(&id)?;
        let room = self.rooms.get_mut(&room_name).expect("room_of only names rooms that exist");
        let index = room.members.iter().position(|member| member.id == id)?;
        let peer = room.members.remove(index);
        let others = room.members.iter().map(|member| member.id).collect();
        if room.members.is_empty() {
            self.rooms.remove(&room_name);
        }
        Some(Left { room: room_name, peer, others })
    }

    /// Records a member's mute and camera state; returns the state to announce and to whom.
    pub fn handle_state(
        &mut self,
        id: ParticipantId,
        update: StateUpdate,
    ) -> Option<(PeerState, Vec<ParticipantId>)> {
        let room = self.rooms.get_mut(self.room_of.get(&id)?)?;
        let member = room.members.iter_mut().find(|member| member.id == id)?;
        member.muted = update.muted;
        member.camera = update.camera;
        let others = room.members.iter().map(|member| member.id).filter(|&other| other != id).collect();
        Some((PeerState { id, muted: update.muted, camera: update.camera }, others))
    }

    /// The members of `room`, in order of joining.
    pub fn members(&self, room: &str) -> impl Iterator<Item = &Peer> {
        self.rooms.get(room).into_iter().flat_map(|room| room.members.iter())
    }

    pub fn room_of(&self, id: ParticipantId) -> Option<&str> {
        self.room_of.get(&id).map(String::as_str)
    }

    pub fn contains(&self, id: ParticipantId) -> bool {
        self.room_of.contains_key(&id)
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub fn participant_count(&self) -> usize {
        self.room_of.len()
    }

    /// The next id after the last one given that is neither 0 nor in use.
    fn allocate_id(&mut self) -> ParticipantId {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            let id = ParticipantId(self.last_id);
            if self.last_id != 0 && !self.room_of.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Compares passwords without an early exit on the first differing byte, so that response
/// times say nothing about how much of a guess was right.
fn same_password(expected: Option<&str>, given: Option<&str>) -> bool {
    match (expected, given) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(expected), Some(given)) => {
            expected.len() == given.len()
                && expected.bytes().zip(given.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(peers: &[Peer]) -> Vec<u32> {
        peers.iter().map(|peer| peer.id.0).collect()
    }

    #[test]
    fn joiners_learn_who_is_there_and_get_distinct_ids() {
        let mut rooms = Rooms::new(16);
        let a = rooms.handle_join("r", "A", None).unwrap();
        let b = rooms.handle_join("r", "B", None).unwrap();
        let c = rooms.handle_join("other", "C", None).unwrap();
        assert!(a.others.is_empty());
        assert_eq!(ids(&b.others), vec![a.id.0]);
        assert!(c.others.is_empty());
        assert_ne!(a.id, b.id);
        assert_eq!(rooms.room_count(), 2);
        assert_eq!(rooms.participant_count(), 3);
    }

    #[test]
    fn first_joiner_sets_the_password() {
        let mut rooms = Rooms::new(16);
        rooms.handle_join("r", "A", Some("s3cret")).unwrap();
        assert_eq!(rooms.handle_join("r", "B", None), Err(JoinRefusal::WrongPassword));
        assert_eq!(rooms.handle_join("r", "B", Some("s3cres")), Err(JoinRefusal::WrongPassword));
        assert_eq!(rooms.handle_join("r", "B", Some("s3cret!")), Err(JoinRefusal::WrongPassword));
        assert!(rooms.handle_join("r", "B", Some("s3cret")).is_ok());
    }

    #[test]
    fn an_open_room_ignores_passwords_and_empty_means_none() {
        let mut rooms = Rooms::new(16);
        rooms.handle_join("r", "A", Some("")).unwrap();
        assert!(rooms.handle_join("r", "B", Some("anything")).is_ok());
    }

    #[test]
    fn rooms_fill_up_and_free_places_when_people_leave() {
        let mut rooms = Rooms::new(2);
        let a = rooms.handle_join("r", "A", None).unwrap();
        rooms.handle_join("r", "B", None).unwrap();
        assert_eq!(rooms.handle_join("r", "C", None), Err(JoinRefusal::RoomFull { max: 2 }));
        let left = rooms.handle_leave(a.id).unwrap();
        assert_eq!(left.others.len(), 1);
        assert!(rooms.handle_join("r", "C", None).is_ok());
    }

    #[test]
    fn a_room_ends_with_its_last_member_and_its_password_with_it() {
        let mut rooms = Rooms::new(16);
        let a = rooms.handle_join("r", "A", Some("pw")).unwrap();
        let left = rooms.handle_leave(a.id).unwrap();
        assert!(left.others.is_empty());
        assert_eq!(rooms.room_count(), 0);
        assert!(rooms.handle_join("r", "B", None).is_ok(), "the old password went with the room");
        assert_eq!(rooms.handle_leave(a.id), None, "leaving twice is a no-op");
    }

    #[test]
    fn state_goes_to_the_others_only() {
        let mut rooms = Rooms::new(16);
        let a = rooms.handle_join("r", "A", None).unwrap();
        let b = rooms.handle_join("r", "B", None).unwrap();
        rooms.handle_join("x", "X", None).unwrap();
        let (state, to) = rooms.handle_state(a.id, StateUpdate { muted: true, camera: true }).unwrap();
        assert_eq!(state, PeerState { id: a.id, muted: true, camera: true });
        assert_eq!(to, vec![b.id]);
        let members: Vec<_> = rooms.members("r").cloned().collect();
        assert!(members[0].muted && members[0].camera);
    }

    #[test]
    fn admitted_members_skip_the_checks_and_keep_their_ids() {
        let mut rooms = Rooms::new(2);
        rooms.handle_join("r", "A", Some("pw")).unwrap();
        rooms.handle_join("r", "B", Some("pw")).unwrap();
        let c = rooms.handle_admitted("r", "C", ParticipantId(4242));
        assert_eq!(c.id, ParticipantId(4242));
        assert_eq!(c.others.len(), 2);
        assert_eq!(rooms.room_of(c.id), Some("r"));
        assert!(rooms.contains(c.id));
        assert_eq!(rooms.handle_leave(c.id).unwrap().others.len(), 2);
    }

    #[test]
    fn ids_skip_zero_and_ids_in_use_when_they_wrap() {
        let mut rooms = Rooms::new(16);
        rooms.last_id = u32::MAX - 1;
        let a = rooms.handle_join("r", "A", None).unwrap();
        assert_eq!(a.id, ParticipantId(u32::MAX));
        let b = rooms.handle_join("r", "B", None).unwrap();
        assert_eq!(b.id, ParticipantId(1));
        rooms.last_id = u32::MAX - 1;
        let c = rooms.handle_join("r", "C", None).unwrap();
        assert_eq!(c.id, ParticipantId(2), "MAX and 1 are taken, 0 is never used");
    }
}
