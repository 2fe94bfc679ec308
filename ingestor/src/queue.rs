//! The queue between a channel's capture thread and its Kafka delivery task. Its bound is
//! where the local policy applies when Kafka cannot keep up: either the camera read waits
//! (nothing captured is lost, the source may skip frames on its side) or the oldest queued
//! frame is discarded and counted, so a live camera always delivers its latest picture.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    /// The capture waits for room: every captured frame is delivered.
    Block,
    /// The oldest queued frame is dropped (and counted) to make room.
    DropOldest,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued after discarding the oldest frame.
    QueuedDroppingOldest,
    /// The queue was closed, or `stop` was cancelled while waiting for room.
    Refused,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

pub struct FrameQueue<T> {
    state: Mutex<State<T>>,
    room: Condvar,
    ready: tokio::sync::Notify,
    capacity: usize,
    policy: QueuePolicy,
}

/// How often a blocked capture looks at its stop token.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl<T> FrameQueue<T> {
    pub fn new(capacity: usize, policy: QueuePolicy) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.max(1)),
                closed: false,
            }),
            room: Condvar::new(),
            ready: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called from the capture thread; may block (the `Block` policy).
    pub fn push(&self, item: T, stop: &CancellationToken) -> Pushed {
        let mut state = self.lock();
        loop {
            if state.closed || stop.is_cancelled() {
                return Pushed::Refused;
            }
            if state.items.len() < self.capacity {
                state.items.push_back(item);
                drop(state);
                self.ready.notify_one();
                return Pushed::Queued;
            }
            match self.policy {
                QueuePolicy::DropOldest => {
                    state.items.pop_front();
                    state.items.push_back(item);
                    drop(state);
                    self.ready.notify_one();
                    return Pushed::QueuedDroppingOldest;
                }
                QueuePolicy::Block => {
                    state = self
                        .room
                        .wait_timeout(state, STOP_CHECK)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// No more pushes; `pop` drains what is queued, then answers `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
        self.ready.notify_one();
    }

    pub async fn pop(&self) -> Option<T> {
        loop {
            {
                let mut state = self.lock();
                if let Some(item) = state.items.pop_front() {
                    drop(state);
                    self.room.notify_one();
                    return Some(item);
                }
                if state.closed {
                    return None;
                }
            }
            // A notify between the unlock above and this await is kept as a permit.
            self.ready.notified().await;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_frames() {
        let queue = FrameQueue::new(2, QueuePolicy::DropOldest);
        let stop = CancellationToken::new();
        assert_eq!(queue.push(1, &stop), Pushed::Queued);
        assert_eq!(queue.push(2, &stop), Pushed::Queued);
        assert_eq!(queue.push(3, &stop), Pushed::QueuedDroppingOldest);
        queue.close();
        assert_eq!(queue.pop().await, Some(2));
        assert_eq!(queue.pop().await, Some(3));
        assert_eq!(queue.pop().await, None);
    }

    #[tokio::test]
    async fn block_waits_for_room_and_loses_nothing() {
        let queue = Arc::new(FrameQueue::new(1, QueuePolicy::Block));
        let producer_queue = Arc::clone(&queue);
        let producer = std::thread::spawn(move || {
            let stop = CancellationToken::new();
            for item in 0..50 {
                assert_eq!(producer_queue.push(item, &stop), Pushed::Queued);
            }
            producer_queue.close();
        });
        let mut received = Vec::new();
        while let Some(item) = queue.pop().await {
            received.push(item);
        }
        producer.join().expect("producer thread");
        assert_eq!(received, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_blocked_push_gives_up_when_stopped() {
        let queue = FrameQueue::new(1, QueuePolicy::Block);
        let stop = CancellationToken::new();
        assert_eq!(queue.push(1, &stop), Pushed::Queued);
        stop.cancel();
        assert_eq!(queue.push(2, &stop), Pushed::Refused);
    }
}
