//! A fixed number of slots handed out by priority: when a slot frees, the waiting thunk on the longest
//! remaining path runs first, as cargo schedules by the depth of a unit's dependents. Ties go to the
//! one that waited longest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The slots.
#[derive(Clone)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    next_ticket: u64,
    waiting: BinaryHeap<(u64, Reverse<u64>, Waiter)>,
}

/// Ordered by priority and ticket only.
struct Waiter(oneshot::Sender<()>);

impl PartialEq for Waiter {
    fn eq(&self, _: &Waiter) -> bool {
        true
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Waiter) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    fn cmp(&self, _: &Waiter) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// A slot held; dropping it passes the slot on.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl Slots {
    /// `count` slots (at least one).
    pub fn new(count: usize) -> Slots {
        Slots { state: Arc::new(Mutex::new(State { free: count.max(1), next_ticket: 0, waiting: BinaryHeap::new() })) }
    }

    /// Waits for a slot; higher `priority` first.
    pub async fn acquire(&self, priority: u64) -> Slot {
        let receiver = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Slot { state: Arc::clone(&self.state) };
            }
            let (sender, receiver) = oneshot::channel();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push((priority, Reverse(ticket), Waiter(sender)));
            receiver
        };
        // The sender lives in the heap until a slot is handed over; it is never dropped unsent.
        let _ = receiver.await;
        Slot { state: Arc::clone(&self.state) }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((_, _, Waiter(sender))) = state.waiting.pop() {
            // A waiter whose task was cancelled no longer listens: try the next one.
            if sender.send(()).is_ok() {
                return;
            }
        }
        state.free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_highest_priority_waiter_goes_first() {
        let slots = Slots::new(1);
        let held = slots.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 1), ("high", 9), ("middle", 5), ("middle-later", 5)] {
            let (slots, order) = (slots.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "middle", "middle-later", "low"]);
    }
}
