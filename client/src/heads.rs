//! Reading and publishing a tree's head record on a majority of the nodes
//! closest to it, with the shard protocol's `GetHead` and `PutHead`.
//!
//! A [`Round`] decides; [`read`] and [`publish`] are the I/O around it.
//! Every request goes to every peer of the record at once, and a round
//! ends as soon as its outcome is certain, so a dead node costs nothing
//! while a majority answers:
//! - a read ends once a majority has answered (each answer: the record it
//!   holds, or none). Any majority meets the majority that took the newest
//!   acknowledged record, so a read that ends sees it;
//! - a publish ends once a majority has stored the record, or as soon as a
//!   majority can no longer be reached. A node that holds a record with the
//!   same sequence or a higher one refuses and answers with that record, so
//!   a writer that lost a race learns it in one round trip and without a
//!   timeout (Kademlia's `PUT_VALUE` has no refusal: the sender only sees
//!   its request reset, or waits out a timeout).

use std::sync::Arc;
use std::time::Duration;

use cairn_net::shard_client::HeadPut;
use cairn_net::{PeerId, ShardClient, Timeouts};
use cairn_proto::RecordId;
use cairn_proto::head::HeadRecord;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::error::Error;
use crate::tasks::Tasks;
use crate::transfer::Transfer;

/// Timeouts of head requests: dialling a node that is down fails within
/// `open`; a round does not wait for it while a majority answers.
const TIMEOUTS: Timeouts = Timeouts { open: Duration::from_secs(5), request: Duration::from_secs(10) };
/// How long the requests still running after a publish has its majority
/// may go on in the background (more copies of the record).
const STRAGGLERS: Duration = Duration::from_secs(5);

/// One node's answer.
#[derive(Debug)]
pub(crate) enum Answer {
    /// To a read: the record it holds, if any.
    Holds(Option<HeadRecord>),
    /// To a publish: stored.
    Stored,
    /// To a publish: refused; it holds this record, as new or newer.
    Held(HeadRecord),
    /// No usable answer.
    Failed(Error),
}

/// How a round ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A read: the records a majority holds (each node's, when it had one).
    Read(Vec<HeadRecord>),
    /// A publish: a majority stored the record.
    Stored,
    /// A publish cannot reach a majority, and nodes hold these records
    /// instead (at least one).
    Lost(Vec<HeadRecord>),
    /// Too few nodes answered.
    Unreachable {
        /// Nodes that answered.
        answered: usize,
        /// Answers needed.
        needed: usize,
        /// The last failure.
        last: Error,
    },
}

/// What a round asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ask {
    /// The record each node holds.
    Read,
    /// Store this record.
    Publish,
}

/// The state of one round of requests to `peers` nodes.
#[derive(Debug)]
pub(crate) struct Round {
    ask: Ask,
    peers: usize,
    needed: usize,
    /// Nodes that answered a read, or stored.
    ok: usize,
    /// Nodes that failed, or refused.
    not: usize,
    records: Vec<HeadRecord>,
    last: Option<Error>,
}

impl Round {
    /// A round over `peers` nodes (at least one), which needs a majority.
    pub(crate) fn new(ask: Ask, peers: usize) -> Self {
        Self { ask, peers, needed: peers / 2 + 1, ok: 0, not: 0, records: Vec::new(), last: None }
    }

    /// Takes one answer; the outcome once it is certain.
    pub(crate) fn answer(&mut self, answer: Answer) -> Option<Outcome> {
        match (self.ask, answer) {
            (Ask::Read, Answer::Holds(record)) => {
                self.ok += 1;
                self.records.extend(record);
            }
            (Ask::Publish, Answer::Stored) => self.ok += 1,
            (Ask::Publish, Answer::Held(record)) => {
                self.not += 1;
                self.records.push(record);
            }
            (_, Answer::Failed(e)) => {
                self.not += 1;
                self.last = Some(e);
            }
            (ask, other) => {
                self.not += 1;
                self.last = Some(Error::BadHeadAnswer { asked: ask_name(ask), got: answer_name(&other) });
            }
        }
        if self.ok >= self.needed {
            return Some(match self.ask {
                Ask::Read => Outcome::Read(std::mem::take(&mut self.records)),
                Ask::Publish => Outcome::Stored,
            });
        }
        if self.peers - self.not >= self.needed {
            return None;
        }
        if self.ask == Ask::Publish && !self.records.is_empty() {
            return Some(Outcome::Lost(std::mem::take(&mut self.records)));
        }
        Some(Outcome::Unreachable {
            answered: self.ok,
            needed: self.needed,
            last: self.last.take().unwrap_or(Error::NoNodes),
        })
    }
}

fn ask_name(ask: Ask) -> &'static str {
    match ask {
        Ask::Read => "read",
        Ask::Publish => "publish",
    }
}

fn answer_name(a: &Answer) -> &'static str {
    match a {
        Answer::Holds(_) => "a record",
        Answer::Stored => "stored",
        Answer::Held(_) => "a refusal",
        Answer::Failed(_) => "a failure",
    }
}

/// The records a majority of `peers` hold under `record` (each node's,
/// when it had one).
pub(crate) async fn read(
    transfer: &Arc<Transfer>,
    tasks: &Tasks,
    record: RecordId,
    peers: &[PeerId],
) -> Result<Vec<HeadRecord>, Error> {
    match round(transfer, tasks, record, peers, None).await {
        Outcome::Read(found) => Ok(found),
        other => Err(failure(record, other)),
    }
}

/// Stores `head` on a majority of `peers`. [`Error::HeadRaced`] when nodes
/// hold a record of its sequence or a higher one, so that a majority is out
/// of reach.
pub(crate) async fn publish(
    transfer: &Arc<Transfer>,
    tasks: &Tasks,
    peers: &[PeerId],
    head: &HeadRecord,
) -> Result<(), Error> {
    offer(transfer, tasks, peers, head).await.map_err(|(e, _)| e)
}

/// As [`publish`]; a lost race also gives the records that the refusing
/// nodes hold, when there are enough of them (see [`refusals_suffice`])
/// for a retry to build on them without reading the head again.
pub(crate) async fn offer(
    transfer: &Arc<Transfer>,
    tasks: &Tasks,
    peers: &[PeerId],
    head: &HeadRecord,
) -> Result<(), (Error, Vec<HeadRecord>)> {
    let record = head.record_id();
    match round(transfer, tasks, record, peers, Some(head)).await {
        Outcome::Stored => Ok(()),
        Outcome::Lost(held) => {
            let error = failure(record, Outcome::Lost(held.clone()));
            let held = if refusals_suffice(peers.len(), held.len()) { held } else { Vec::new() };
            Err((error, held))
        }
        other => Err((failure(record, other), Vec::new())),
    }
}

/// Whether the records of `refusals` refusing nodes (of `peers`) stand for
/// a read: so many nodes that they meet every majority, and so hold every
/// acknowledged record or a newer one. Fewer (other nodes failed) might
/// all be outside the majority that took the newest record.
pub(crate) fn refusals_suffice(peers: usize, refusals: usize) -> bool {
    refusals + (peers / 2 + 1) > peers
}

fn failure(record: RecordId, outcome: Outcome) -> Error {
    match outcome {
        Outcome::Lost(held) => {
            Error::HeadRaced { record, held: held.iter().map(|h| h.sequence).max().unwrap_or_default() }
        }
        Outcome::Unreachable { answered, needed, last } => {
            Error::HeadUnreachable { record, answered, needed, last: Box::new(last) }
        }
        Outcome::Read(_) | Outcome::Stored => Error::BadHeadAnswer { asked: "a round", got: "another outcome" },
    }
}

/// Asks every peer at once and returns the outcome once it is certain.
/// A publish's requests still running then go on in the background on
/// `tasks`, for at most [`STRAGGLERS`] and never past shutdown, so that
/// more nodes hold the record.
async fn round(
    transfer: &Arc<Transfer>,
    tasks: &Tasks,
    record: RecordId,
    peers: &[PeerId],
    publish: Option<&HeadRecord>,
) -> Outcome {
    let ask = if publish.is_some() { Ask::Publish } else { Ask::Read };
    let mut round = Round::new(ask, peers.len().max(1));
    if peers.is_empty() {
        return Outcome::Unreachable { answered: 0, needed: 1, last: Error::NoNodes };
    }
    // Nodes that failed lately are not asked while the others can still
    // make a majority: each would be a dial that ends in a timeout.
    let nodes = transfer.nodes();
    let down: Vec<bool> = peers.iter().map(|p| nodes.penalized(p)).collect();
    let pass_over = down.iter().filter(|d| !**d).count() >= round.needed;
    let mut pending = FuturesUnordered::new();
    for (&peer, down) in peers.iter().zip(down) {
        if pass_over && down {
            if let Some(outcome) = round.answer(Answer::Failed(Error::PassedOver { peer })) {
                return outcome;
            }
            continue;
        }
        nodes.asking(&peer);
        let client = ShardClient::new(transfer.net().clone(), peer, TIMEOUTS);
        let transfer = Arc::clone(transfer);
        let offered = publish.cloned();
        pending.push(async move {
            // A busy node is asked again after a backoff, not failed.
            let mut nth = 0;
            let answer = loop {
                let answer = match &offered {
                    None => client.get_head(record).await.map(Answer::Holds),
                    Some(r) => client.put_head(r.clone()).await.map(|p| match p {
                        HeadPut::Stored => Answer::Stored,
                        HeadPut::Held(h) => Answer::Held(h),
                    }),
                };
                match answer.as_ref().err().and_then(|e| crate::schedule::busy_wait(e, nth)) {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        nth += 1;
                    }
                    None => break answer,
                }
            };
            transfer.nodes().report(peer, answer.is_ok());
            answer.unwrap_or_else(|e| Answer::Failed(e.into()))
        });
    }
    while let Some(answer) = pending.next().await {
        if let Some(outcome) = round.answer(answer) {
            if ask == Ask::Publish && !pending.is_empty() {
                tasks.spawn_until_shutdown(async move {
                    let _ = tokio::time::timeout(STRAGGLERS, async { while pending.next().await.is_some() {} }).await;
                });
            }
            return outcome;
        }
    }
    // The last answer always decides; this is not reached.
    Outcome::Unreachable { answered: round.ok, needed: round.needed, last: round.last.unwrap_or(Error::NoNodes) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64) -> HeadRecord {
        HeadRecord { public_key: [1; 32], sequence: seq, payload: Vec::new(), signature: [0; 64] }
    }

    fn failed() -> Answer {
        Answer::Failed(Error::NoNodes)
    }

    #[test]
    fn a_read_ends_at_a_majority_of_answers_with_what_they_hold() {
        let mut r = Round::new(Ask::Read, 5);
        assert!(r.answer(Answer::Holds(Some(record(3)))).is_none());
        assert!(r.answer(failed()).is_none());
        assert!(r.answer(Answer::Holds(None)).is_none());
        match r.answer(Answer::Holds(Some(record(4)))) {
            Some(Outcome::Read(found)) => assert_eq!(found, vec![record(3), record(4)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_read_fails_once_a_majority_cannot_answer() {
        let mut r = Round::new(Ask::Read, 4);
        assert!(r.answer(Answer::Holds(None)).is_none());
        assert!(r.answer(failed()).is_none());
        match r.answer(failed()) {
            Some(Outcome::Unreachable { answered: 1, needed: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_publish_is_stored_at_a_majority_and_lost_when_one_is_out_of_reach() {
        let mut won = Round::new(Ask::Publish, 3);
        assert!(won.answer(Answer::Held(record(9))).is_none());
        assert!(won.answer(Answer::Stored).is_none());
        assert!(matches!(won.answer(Answer::Stored), Some(Outcome::Stored)));

        let mut lost = Round::new(Ask::Publish, 8);
        assert!(lost.answer(Answer::Stored).is_none());
        for _ in 0..3 {
            assert!(lost.answer(failed()).is_none());
        }
        // 4 of 8 refused or failed: 5 stored is out of reach.
        match lost.answer(Answer::Held(record(7))) {
            Some(Outcome::Lost(held)) => assert_eq!(held, vec![record(7)]),
            other => panic!("{other:?}"),
        }

        let mut dark = Round::new(Ask::Publish, 1);
        assert!(matches!(dark.answer(failed()), Some(Outcome::Unreachable { answered: 0, needed: 1, .. })));
    }

    #[test]
    fn an_answer_of_the_wrong_kind_counts_as_a_failure() {
        let mut r = Round::new(Ask::Read, 1);
        match r.answer(Answer::Stored) {
            Some(Outcome::Unreachable { last: Error::BadHeadAnswer { asked: "read", got: "stored" }, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_stand_for_a_read_only_when_they_meet_every_majority() {
        // By brute force: a set of refusing nodes stands for a read when
        // every majority of the same nodes shares one with it.
        for peers in 1..=10usize {
            let needed = Round::new(Ask::Publish, peers).needed;
            let majorities: Vec<u32> = (0u32..1 << peers).filter(|m| m.count_ones() as usize == needed).collect();
            for refusals in 0..=peers {
                let refused = (1u32 << refusals) - 1;
                let meets_all = majorities.iter().all(|m| m & refused != 0);
                assert_eq!(refusals_suffice(peers, refusals), meets_all, "{peers} peers, {refusals} refusals");
            }
            // A lost race decided by refusals alone always has enough.
            assert!(refusals_suffice(peers, peers - needed + 1));
        }
    }
}
