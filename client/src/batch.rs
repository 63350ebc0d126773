//! Which queued works go into the committer's next commit: what is
//! queued, and a short wait for writers about to send again, so that a
//! burst goes out as one commit (group commit). Plain logic over a
//! channel; the committer in [`crate::tree`] is its only user.

use std::time::Duration;

use tokio::sync::mpsc;

/// Most ops in one commit.
pub const MAX_BATCH: usize = 4096;
/// How long the committer waits for the writers it just answered to queue
/// again before it commits what it has (see [`gather`]).
pub const GATHER: Duration = Duration::from_millis(5);

/// Takes `first` and what is queued behind it, up to [`MAX_BATCH`] ops
/// (`ops` weighs an item). Fewer than `expect` items (see [`writers`])
/// means writers were answered a moment ago and are sending again: it
/// waits up to [`GATHER`] for them, so that a burst keeps going out as one
/// commit rather than as one of a single group and one of the rest.
pub async fn gather<T>(rx: &mut mpsc::Receiver<T>, first: T, expect: usize, ops: impl Fn(&T) -> usize) -> Vec<T> {
    let mut size = ops(&first);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + GATHER;
    while size < MAX_BATCH {
        let more = match rx.try_recv() {
            Ok(more) => more,
            Err(mpsc::error::TryRecvError::Empty) if batch.len() < expect => {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(more)) => more,
                    _ => break,
                }
            }
            Err(_) => break,
        };
        size += ops(&more);
        batch.push(more);
    }
    batch
}

/// How many writers the next batch waits for: those of the batch just
/// committed (answered now, each about to send again) and those that
/// queued while it was out. Counting only the first, writers that take a
/// moment between an answer and their next write (a file system's close
/// and create, an HTTP client's next request) settle into two halves
/// whose commits alternate, each half the size it could be.
pub fn writers(committed: usize, queued: usize) -> usize {
    (committed + queued).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_waits_for_as_many_writers_as_the_last_had() {
        let (tx, mut rx) = mpsc::channel::<usize>(16);
        // A lone writer is never held up, and whatever is queued comes along.
        assert_eq!(gather(&mut rx, 1, 1, |_| 1).await, vec![1]);
        for i in 2..=4 {
            tx.send(i).await.expect("send");
        }
        assert_eq!(gather(&mut rx, 1, 1, |_| 1).await, vec![1, 2, 3, 4]);
        // The last batch had four: the writers sending again are waited for.
        let late = tx.clone();
        tokio::spawn(async move {
            for i in 2..=4 {
                tokio::task::yield_now().await;
                late.send(i).await.expect("send");
            }
        });
        assert_eq!(gather(&mut rx, 1, 4, |_| 1).await, vec![1, 2, 3, 4]);
        // Not forever: one that does not come is given up on.
        tx.send(2).await.expect("send");
        assert_eq!(gather(&mut rx, 1, 4, |_| 1).await, vec![1, 2]);
        // Nor past the most ops a commit takes.
        tx.send(MAX_BATCH).await.expect("send");
        tx.send(1).await.expect("send");
        assert_eq!(gather(&mut rx, 1, 4, |&w| w).await, vec![1, MAX_BATCH]);
        assert_eq!(rx.try_recv().ok(), Some(1));
    }

    #[tokio::test]
    async fn writers_that_queued_during_a_commit_are_waited_for_with_those_it_answered() {
        let (tx, mut rx) = mpsc::channel::<usize>(64);
        // A lone sequential writer never waits.
        assert_eq!(writers(1, 0), 1);
        assert_eq!(writers(0, 0), 1);
        // 16 writers that take a moment between an answer and their next
        // write, split in two halves: 8 were committed, 8 queued meanwhile.
        let expect = writers(8, 8);
        for i in 0..8 {
            tx.send(i).await.expect("send");
        }
        let answered = tx.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            for i in 8..16 {
                answered.send(i).await.expect("send");
            }
        });
        let first = rx.recv().await.expect("first");
        let batch = gather(&mut rx, first, expect, |_| 1).await;
        // One commit of all 16, where counting only the answered (8) kept
        // the halves apart.
        assert_eq!(batch, (0..16).collect::<Vec<_>>());
        assert_eq!(writers(batch.len(), 0), 16);
    }
}
