//! A fixed number of slots handed out by priority: when a slot frees, the waiting thunk with the highest
//! priority (see [`crate::force::Forcer::prioritize`]) runs first. Ties go to the one that waited longest.
//!
//! Priorities are looked up when a slot frees, not when a thunk starts waiting: `cargo lambdabuild`
//! starts forcing while cargo is still reporting the graph, so a thunk may wait before its priority is
//! known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::hash::Hash;

/// The slots.
#[derive(Clone)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

struct State {
    free: usize,
    next_ticket: u64,
    priorities: HashMap<Hash, u64>,
    waiting: Vec<Waiter>,
}

struct Waiter {
    thunk: Hash,
    ticket: u64,
    wake: oneshot::Sender<()>,
}

/// A slot held; dropping it passes the slot on.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl Slots {
    /// `count` slots (at least one).
    pub fn new(count: usize) -> Slots {
        let state = State { free: count.max(1), next_ticket: 0, priorities: HashMap::new(), waiting: Vec::new() };
        Slots { state: Arc::new(Mutex::new(state)) }
    }

    /// Sets the priorities of thunks (higher first); a thunk without one has priority 0.
    pub fn set_priorities(&self, priorities: HashMap<Hash, u64>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).priorities = priorities;
    }

    /// Waits for a slot to run `thunk`. Even a free slot is handed over only after a moment (see
    /// [`HANDOVER_DELAY`]), to the highest priority among the thunks that asked by then: at the start of
    /// a build, the first thunks to ask are the shallow ones, not those on the critical path.
    pub async fn acquire(&self, thunk: Hash) -> Slot {
        let receiver = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (wake, receiver) = oneshot::channel();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push(Waiter { thunk, ticket, wake });
            if state.free > 0 {
                state.free -= 1;
                schedule_handover(&self.state);
            }
            receiver
        };
        // The sender stays in the list until a slot is handed over; it is never dropped unsent.
        let _ = receiver.await;
        Slot { state: Arc::clone(&self.state) }
    }
}

impl State {
    /// Removes the waiter to run next: highest priority, then longest waiting. A linear scan: a few
    /// thousand waiters at most, once per finished thunk.
    fn take_next(&mut self) -> Option<Waiter> {
        let priority = |waiter: &Waiter| self.priorities.get(&waiter.thunk).copied().unwrap_or(0);
        let best = (0..self.waiting.len())
            .max_by_key(|&i| (priority(&self.waiting[i]), std::cmp::Reverse(self.waiting[i].ticket)))?;
        Some(self.waiting.swap_remove(best))
    }
}

/// How long a slot waits before it is handed over. A thunk publishes its outcome only after giving its
/// slot back, so the thunks waiting for that outcome (often the next on the critical path) queue a
/// moment later; handed over at once, the slot would go to a lower-priority thunk already waiting, and
/// every step of the critical path would wait for one such thunk.
const HANDOVER_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

impl Drop for Slot {
    fn drop(&mut self) {
        schedule_handover(&self.state);
    }
}

/// Hands one slot over after [`HANDOVER_DELAY`] (at once outside a runtime).
fn schedule_handover(state: &Arc<Mutex<State>>) {
    let state = Arc::clone(state);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                tokio::time::sleep(HANDOVER_DELAY).await;
                hand_over(&state);
            });
        }
        Err(_) => hand_over(&state),
    }
}

/// Gives a freed slot to the waiter to run next, or back to the pool.
fn hand_over(state: &Mutex<State>) {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(waiter) = state.take_next() {
        // A waiter whose task was cancelled no longer listens: try the next one.
        if waiter.wake.send(()).is_ok() {
            return;
        }
    }
    state.free += 1;
}

/// Numbered lanes for things running at once, each taking the lowest free number: the rows of a
/// timeline (a local slot, a function serving several invocations).
#[derive(Debug, Default)]
pub struct Lanes {
    busy: Mutex<Vec<bool>>,
}

impl Lanes {
    /// Takes the lowest lane not in use.
    pub fn take(&self) -> usize {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let lane = busy.iter().position(|busy| !busy).unwrap_or(busy.len());
        if lane == busy.len() {
            busy.push(true);
        } else {
            busy[lane] = true;
        }
        lane
    }

    /// Frees `lane`.
    pub fn give_back(&self, lane: usize) {
        if let Some(busy) = self.busy.lock().unwrap_or_else(|e| e.into_inner()).get_mut(lane) {
            *busy = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_the_lowest_free_numbers() {
        let lanes = Lanes::default();
        assert_eq!((lanes.take(), lanes.take(), lanes.take()), (0, 1, 2));
        lanes.give_back(1);
        assert_eq!(lanes.take(), 1);
        assert_eq!(lanes.take(), 3);
    }

    fn thunk(name: &str) -> Hash {
        Hash::of(name.as_bytes())
    }

    /// Four thunks wait for one held slot; their priorities are set (or changed) while they wait.
    async fn order_of(priorities: &[(&'static str, u64)]) -> Vec<&'static str> {
        let slots = Slots::new(1);
        let held = slots.acquire(thunk("first")).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for name in ["low", "high", "middle", "middle-later"] {
            let (slots, order) = (slots.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(thunk(name)).await;
                order.lock().unwrap().push(name);
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        slots.set_priorities(priorities.iter().map(|(name, priority)| (thunk(name), *priority)).collect());
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn the_highest_priority_waiter_goes_first() {
        let order = order_of(&[("low", 1), ("high", 9), ("middle", 5), ("middle-later", 5)]).await;
        assert_eq!(order, ["high", "middle", "middle-later", "low"]);
    }

    #[tokio::test]
    async fn waiters_without_a_priority_go_in_arrival_order() {
        assert_eq!(order_of(&[]).await, ["low", "high", "middle", "middle-later"]);
    }
}
