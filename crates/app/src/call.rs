//! What the app knows about the call it is in, built from the engine's events alone, so that
//! the call screen can be driven and tested without a network.

use std::collections::BTreeMap;
use std::time::Duration;

use chinwag_engine::{CallEvent, ParticipantId, Peer};

use crate::errors::{Problem, capitalise, describe_drop, describe_failure, describe_retry, relay_reason};

/// What the app says when video is asked for and there is no camera.
pub const NO_CAMERA: &str = "No camera found. Choose \"Test pattern\" under Devices to send video anyway.";

/// Where the connection to the relay stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    /// Dialling for the first time.
    Connecting,
    Joined,
    /// The engine is retrying after `reason` (in plain words); `joined_before` tells a
    /// dropped call from one that never got through. `relay_said` is the relay's own reason
    /// for ending the connection (shutting down, too slow), kept while later attempts fail
    /// in other ways (the relay is not back yet).
    Retrying {
        reason: String,
        relay_said: Option<String>,
        retry_in: Duration,
        joined_before: bool,
    },
}

/// Another participant, as the call screen shows them.
#[derive(Debug, Clone, PartialEq)]
pub struct Participant {
    pub id: ParticipantId,
    pub name: String,
    pub muted: bool,
    pub camera: bool,
    /// The gain this app applies to their audio, 0.0 to 2.0.
    pub volume: f32,
}

impl Participant {
    fn from_peer(peer: &Peer) -> Self {
        Self { id: peer.id, name: peer.name.clone(), muted: peer.muted, camera: peer.camera, volume: 1.0 }
    }
}

/// Which tile is shown full screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tile {
    Me,
    Peer(ParticipantId),
}

/// What an event means for the app, beyond updating [`CallState`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Continue,
    /// The call is over: back to the connect screen, with the reason if it failed.
    Ended(Option<Problem>),
}

/// The state of the call screen.
#[derive(Debug, Clone)]
pub struct CallState {
    pub room: String,
    pub my_name: String,
    pub my_id: Option<ParticipantId>,
    pub link: Link,
    /// Everyone else in the room, in the order they were given ids.
    pub peers: BTreeMap<ParticipantId, Participant>,
    pub muted: bool,
    pub camera: bool,
    /// The tile shown large in the window, if any.
    pub enlarged: Option<Tile>,
    /// Whether the window fills the screen.
    pub window_full_screen: bool,
    pub show_connection: bool,
    pub show_devices: bool,
    /// Device problems and changes, newest last, for the person to read and dismiss.
    pub notices: Vec<String>,
    /// When this app hosts the relay: the addresses others can dial.
    pub hosting: Option<Vec<String>>,
}

impl CallState {
    pub fn new(room: impl Into<String>, my_name: impl Into<String>, camera: bool) -> Self {
        Self {
            room: room.into(),
            my_name: my_name.into(),
            my_id: None,
            link: Link::Connecting,
            peers: BTreeMap::new(),
            muted: false,
            camera,
            enlarged: None,
            window_full_screen: false,
            show_connection: false,
            show_devices: false,
            notices: Vec::new(),
            hosting: None,
        }
    }

    pub fn joined_before(&self) -> bool {
        self.my_id.is_some()
    }

    /// Updates the state from one engine event.
    pub fn handle_event(&mut self, event: CallEvent) -> Outcome {
        match event {
            CallEvent::Joined { id, room, peers, rejoined: _ } => {
                self.my_id = Some(id);
                self.room = room;
                self.link = Link::Joined;
                // Keep the volumes chosen for people still here across a rejoin.
                let old = std::mem::take(&mut self.peers);
                for peer in &peers {
                    let mut participant = Participant::from_peer(peer);
                    if let Some(previous) = old.values().find(|p| p.id == peer.id && p.name == peer.name) {
                        participant.volume = previous.volume;
                    }
                    self.peers.insert(peer.id, participant);
                }
                self.forget_missing_full_screen();
            }
            CallEvent::PeerJoined(peer) => {
                self.peers.insert(peer.id, Participant::from_peer(&peer));
            }
            CallEvent::PeerLeft(id) => {
                self.peers.remove(&id);
                self.forget_missing_full_screen();
            }
            CallEvent::PeerState { id, muted, camera } => {
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.muted = muted;
                    peer.camera = camera;
                }
            }
            CallEvent::Reconnecting { error, retry_in } => {
                let joined_before = self.joined_before();
                let earlier = match &self.link {
                    Link::Retrying { relay_said, .. } => relay_said.clone(),
                    _ => None,
                };
                let relay_said = relay_reason(&error).or(earlier);
                self.link =
                    Link::Retrying { reason: describe_drop(&error), relay_said, retry_in, joined_before };
            }
            CallEvent::Failed(error) => return Outcome::Ended(Some(describe_failure(&error))),
            CallEvent::VideoStopped { error } => {
                self.camera = false;
                let lower = error.to_lowercase();
                if lower.contains("no camera") {
                    self.push_notice(NO_CAMERA.to_owned());
                } else {
                    self.push_notice(format!("{}. The camera is off.", capitalise(&error)));
                }
            }
            CallEvent::DeviceProblem { error, fallback } => {
                self.push_notice(format!("{}. Using {fallback} instead.", capitalise(&error)));
            }
            CallEvent::DeviceChanged { direction, name } => {
                self.push_notice(format!("The system's default {direction} changed: now using {name}."));
            }
            CallEvent::Left => return Outcome::Ended(None),
        }
        Outcome::Continue
    }

    /// A one-line summary of the link, for the status bar.
    pub fn status_line(&self) -> String {
        match &self.link {
            Link::Connecting => "Connecting…".to_owned(),
            Link::Joined => match self.peers.len() {
                0 => "Connected. Waiting for others to join.".to_owned(),
                1 => "Connected with 1 other person.".to_owned(),
                n => format!("Connected with {n} others."),
            },
            Link::Retrying { joined_before, retry_in, relay_said, .. } => {
                let headline = match relay_said {
                    Some(said) => format!("{said}. Reconnecting…"),
                    None => describe_retry(*joined_before).to_owned(),
                };
                format!("{headline} Next try in {:.0} s.", retry_in.as_secs_f32().ceil())
            }
        }
    }

    /// Adds a notice for the person to read, dropping the oldest beyond a few. A notice
    /// already showing is not repeated.
    pub fn push_notice(&mut self, notice: String) {
        const NOTICES_KEPT: usize = 5;
        if self.notices.contains(&notice) {
            return;
        }
        if self.notices.len() == NOTICES_KEPT {
            self.notices.remove(0);
        }
        self.notices.push(notice);
    }

    fn forget_missing_full_screen(&mut self) {
        if let Some(Tile::Peer(id)) = self.enlarged
            && !self.peers.contains_key(&id)
        {
            self.enlarged = None;
        }
    }
}

/// Up to two initials from a name, for a tile whose camera is off.
pub fn initials(name: &str) -> String {
    let words: Vec<&str> = name.split_whitespace().collect();
    let letters: String = match words.as_slice() {
        [] => String::new(),
        [one] => one.chars().take(2).collect(),
        [first, .., last] => first.chars().take(1).chain(last.chars().take(1)).collect(),
    };
    letters.to_uppercase()
}

#[cfg(test)]
mod tests {
    use chinwag_engine::{ErrorCode, TransportError};

    use super::*;

    fn peer(id: u32, name: &str) -> Peer {
        Peer { id: ParticipantId(id), name: name.into(), muted: false, camera: true }
    }

    #[test]
    fn roster_follows_events() {
        let mut state = CallState::new("r", "Me", false);
        state.handle_event(CallEvent::Joined {
            id: ParticipantId(3),
            room: "r".into(),
            peers: vec![peer(1, "Ann")],
            rejoined: false,
        });
        state.handle_event(CallEvent::PeerJoined(peer(4, "Bo")));
        state.handle_event(CallEvent::PeerState { id: ParticipantId(1), muted: true, camera: false });
        assert_eq!(state.peers.len(), 2);
        assert!(state.peers[&ParticipantId(1)].muted);
        state.enlarged = Some(Tile::Peer(ParticipantId(4)));
        state.handle_event(CallEvent::PeerLeft(ParticipantId(4)));
        assert_eq!(state.peers.len(), 1);
        assert_eq!(state.enlarged, None);
    }

    #[test]
    fn retry_says_whether_the_call_was_up() {
        let mut state = CallState::new("r", "Me", false);
        let refused = TransportError::ConnectionRefused { url: "ws://r:1/v1".into() };
        let retry = CallEvent::Reconnecting { error: refused, retry_in: Duration::from_secs(2) };
        state.handle_event(retry.clone());
        assert!(state.status_line().starts_with("Cannot reach the relay yet"));
        state.handle_event(CallEvent::Joined {
            id: ParticipantId(1),
            room: "r".into(),
            peers: vec![],
            rejoined: false,
        });
        state.handle_event(retry);
        assert!(state.status_line().starts_with("Connection lost"));
    }

    #[test]
    fn the_relays_own_reason_stays_while_it_is_not_back_yet() {
        let mut state = CallState::new("r", "Me", false);
        state.handle_event(CallEvent::Joined {
            id: ParticipantId(1),
            room: "r".into(),
            peers: vec![],
            rejoined: false,
        });
        let going = TransportError::Refused { code: ErrorCode::ShuttingDown, message: "bye".into() };
        state.handle_event(CallEvent::Reconnecting { error: going, retry_in: Duration::from_secs(1) });
        assert!(state.status_line().contains("shutting down"), "{}", state.status_line());
        let refused = TransportError::ConnectionRefused { url: "ws://r:1/v1".into() };
        state.handle_event(CallEvent::Reconnecting { error: refused, retry_in: Duration::from_secs(2) });
        assert!(state.status_line().contains("shutting down"), "{}", state.status_line());
        assert!(!state.status_line().contains("refused"), "{}", state.status_line());
        state.handle_event(CallEvent::Joined {
            id: ParticipantId(2),
            room: "r".into(),
            peers: vec![],
            rejoined: true,
        });
        assert_eq!(state.link, Link::Joined);
    }

    #[test]
    fn the_same_notice_is_shown_once() {
        let mut state = CallState::new("r", "Me", false);
        for _ in 0..5 {
            state.handle_event(CallEvent::DeviceProblem {
                error: "speaker x stopped".into(),
                fallback: "y".into(),
            });
        }
        assert_eq!(state.notices.len(), 1);
    }

    #[test]
    fn failure_ends_the_call() {
        let mut state = CallState::new("r", "Me", false);
        let outcome = state.handle_event(CallEvent::Failed(TransportError::RelayFull { url: "u".into() }));
        assert!(matches!(outcome, Outcome::Ended(Some(_))));
    }

    #[test]
    fn initials_of_names() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("bob"), "BO");
        assert_eq!(initials("Jean Paul Sartre"), "JS");
        assert_eq!(initials("  "), "");
    }
}
