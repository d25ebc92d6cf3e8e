//! Which of a spanning room's workers leads it (#16). The lead is the first worker in the
//! room's record that is alive (its heartbeat is there): it computes the active speakers
//! from every participant's audio level (its own participants' and the relayed ones, whose
//! levels travel in the header extension) and runs the room pipeline, fed by the relayed
//! audio. It tells the room's other workers each speaker list and each pipeline message
//! over Redis ([`SpanHost::tell_followers`](super::SpanHost)), and they pass them on to their
//! participants, so everyone in the room sees one order whatever worker holds them.
//!
//! When the lead dies or its last participant leaves, the record's next worker leads: it
//! starts the pipeline afresh (the old pipeline's state is lost) and takes over the speakers.
//! A room on a worker that does not relay leads itself.

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

/// Messages from the lead a room keeps before its task reads them; more are dropped (the
/// next speaker list replaces a lost one).
pub(crate) const LEAD_QUEUE: usize = 64;

/// Who leads a room, as this worker last read the room's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Leadership {
    /// Not read yet: the room computes its speakers for itself meanwhile, tells nobody and
    /// starts no pipeline.
    Unknown,
    /// This worker leads; `followers` other hosting workers are alive.
    Here { followers: usize },
    /// Another worker leads.
    Elsewhere(String),
}

/// What the lead tells the other workers of its room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum LeadMessage {
    /// The active speakers, loudest first (participant ids).
    Speakers { peers: Vec<String> },
    /// One of the room pipeline's data outputs.
    Pipeline { data: serde_json::Value },
}

/// A [`LeadMessage`] as published: with its sender, so that a worker ignores one from a
/// worker it does not take for the lead (two may briefly think they lead while the record
/// changes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FromLead {
    pub from: String,
    #[serde(flatten)]
    pub message: LeadMessage,
}

/// What happened to a room's lead.
#[derive(Debug)]
pub(crate) enum LeadEvent {
    /// The lead changed (ask [`Lead::runs_pipeline`] and the others again).
    Changed,
    /// The lead said something.
    Said(LeadMessage),
}

/// A room's view of its lead, kept current by the cluster side.
pub(crate) struct Lead {
    leadership: watch::Receiver<Leadership>,
    messages: Option<mpsc::Receiver<FromLead>>,
}

impl Lead {
    pub fn new(
        leadership: watch::Receiver<Leadership>,
        messages: mpsc::Receiver<FromLead>,
    ) -> Self {
        Self {
            leadership,
            messages: Some(messages),
        }
    }

    /// A room alone on a worker that does not relay: it leads, and hears from nobody.
    pub fn alone() -> Self {
        Self {
            leadership: watch::channel(Leadership::Here { followers: 0 }).1,
            messages: None,
        }
    }

    /// Whether this worker computes the speakers (it leads, or does not know who does).
    pub fn computes_speakers(&self) -> bool {
        !matches!(*self.leadership.borrow(), Leadership::Elsewhere(_))
    }

    /// Whether this worker runs the room pipeline.
    pub fn runs_pipeline(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Here { .. })
    }

    /// Whether what the room computes must be told to other workers.
    pub fn has_followers(&self) -> bool {
        matches!(*self.leadership.borrow(), Leadership::Here { followers } if followers > 0)
    }

    /// The next change or message of the lead this worker takes for the lead; never
    /// completes once the cluster side stopped following the room.
    pub async fn next(&mut self) -> LeadEvent {
        loop {
            let said = async {
                match self.messages.as_mut() {
                    Some(messages) => messages.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.leadership.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                    return LeadEvent::Changed;
                }
                message = said => match message {
                    Some(FromLead { from, message }) => {
                        if *self.leadership.borrow() == Leadership::Elsewhere(from) {
                            return LeadEvent::Said(message);
                        }
                    }
                    None => self.messages = None,
                },
            }
        }
    }
}

/// Completes with `lead`'s next event; never without one.
pub(crate) async fn lead_event(lead: &mut Option<Lead>) -> LeadEvent {
    match lead {
        Some(lead) => lead.next().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_messages_read_as_published() {
        let message = FromLead {
            from: "worker-a".into(),
            message: LeadMessage::Speakers {
                peers: vec!["p1".into(), "p0".into()],
            },
        };
        let json = serde_json::to_string(&message).expect("serializes");
        assert_eq!(
            json,
            r#"{"from":"worker-a","type":"speakers","peers":["p1","p0"]}"#
        );
        assert_eq!(
            serde_json::from_str::<FromLead>(&json).expect("parses"),
            message
        );
        assert!(serde_json::from_str::<FromLead>(r#"{"from":"w","type":"nope"}"#).is_err());
    }

    #[tokio::test]
    async fn only_the_worker_taken_for_the_lead_is_heard() {
        let (leadership, rx) = watch::channel(Leadership::Elsewhere("worker-a".into()));
        let (said, messages) = mpsc::channel(LEAD_QUEUE);
        let mut lead = Lead::new(rx, messages);
        assert!(!lead.computes_speakers() && !lead.runs_pipeline());
        let speakers = |from: &str, who: &str| FromLead {
            from: from.into(),
            message: LeadMessage::Speakers {
                peers: vec![who.into()],
            },
        };
        said.try_send(speakers("worker-b", "x")).expect("room");
        said.try_send(speakers("worker-a", "y")).expect("room");
        match lead.next().await {
            LeadEvent::Said(LeadMessage::Speakers { peers }) => assert_eq!(peers, ["y"]),
            other => panic!("{other:?}"),
        }
        leadership
            .send(Leadership::Here { followers: 2 })
            .expect("followed");
        assert!(matches!(lead.next().await, LeadEvent::Changed));
        assert!(lead.runs_pipeline() && lead.computes_speakers() && lead.has_followers());
        // Now this worker leads: what another says is ignored.
        said.try_send(speakers("worker-a", "z")).expect("room");
        leadership.send(Leadership::Unknown).expect("followed");
        assert!(matches!(lead.next().await, LeadEvent::Changed));
        assert!(lead.computes_speakers() && !lead.runs_pipeline() && !lead.has_followers());
    }
}
