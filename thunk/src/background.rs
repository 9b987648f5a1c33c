//! Work that no one waits for yet, run on threads the kernel schedules only when a core would
//! otherwise sit idle (`SCHED_IDLE`).
//!
//! The local engine stores what a compile wrote while the next compiles run (see
//! [`crate::force::Forcer::with_deferred_storing`]). On a 2-core laptop, compressing an rlib at the
//! same priority as rustc takes a core from a compile the build is waiting for; at idle priority it
//! fills the gaps a build always has (a crate waiting for its dependencies, the last link), and what is
//! left runs when the compiles are done.
//!
//! The threads are dedicated because Linux lets an unprivileged thread lower its priority but not
//! raise it again: a thread of tokio's blocking pool, once lowered, would stay lowered for the next
//! caller, which may be on the critical path.

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// Runs `work` on an idle-priority thread and returns its result. Falls back to tokio's blocking pool
/// (normal priority) if no thread could be started.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = sender.send(work());
    });
    let unsent = match queue() {
        Some(queue) => queue.send(job).err().map(|mpsc::SendError(job)| job),
        None => Some(job),
    };
    if let Some(job) = unsent {
        tokio::task::spawn_blocking(job);
    }
    // The sender is dropped unsent only when `work` panicked (the panic is printed where it ran).
    receiver.await.expect("a background job panicked")
}

/// The queue of the idle threads, started on first use: one per core, so that what is left when the
/// compiles end takes all of them. `None` if not one could be started.
fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let started = (0..threads).filter(|_| start_thread(&receiver)).count();
            (started > 0).then_some(sender)
        })
        .as_ref()
}

fn start_thread(receiver: &Arc<Mutex<mpsc::Receiver<Job>>>) -> bool {
    let receiver = Arc::clone(receiver);
    std::thread::Builder::new()
        .name("lambdabuild-idle".into())
        .spawn(move || {
            lower_priority();
            loop {
                let job = receiver.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match job {
                    // A panicking job fails its caller, not the thread.
                    Ok(job) => drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))),
                    Err(mpsc::RecvError) => return,
                }
            }
        })
        .is_ok()
}

/// Puts the calling thread in `SCHED_IDLE`. If the kernel refuses, the work runs at normal
/// priority, as it would without this module.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param; pid 0 names the calling thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn work_runs_at_idle_priority_and_its_result_comes_back() {
        // SAFETY: sched_getscheduler has no memory-safety preconditions.
        let policy = super::run(|| unsafe { libc::sched_getscheduler(0) }).await;
        assert_eq!(policy, libc::SCHED_IDLE);
        let sum = super::run(|| (1..=10).sum::<u32>()).await;
        assert_eq!(sum, 55);
    }

    #[tokio::test]
    async fn the_caller_keeps_its_priority() {
        super::run(|| ()).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }
}
