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

/// Runs `work` on an idle-priority thread and returns its result. Once `hurry` completes (the caller
/// now waits for the result), `work` also runs at normal priority on tokio's blocking pool and the
/// first result wins: a machine kept busy by other programs starves an idle thread, and nothing should
/// then wait on it. Without idle threads (none could be started), it runs on the blocking pool.
pub async fn run<T: Send + 'static>(
    work: impl Fn() -> T + Send + Sync + 'static,
    hurry: impl std::future::Future<Output = ()>,
) -> T {
    let work = Arc::new(work);
    let (sender, mut receiver) = tokio::sync::oneshot::channel();
    let idle_work = Arc::clone(&work);
    let job: Job = Box::new(move || {
        // Already done at normal priority.
        if !sender.is_closed() {
            let _ = sender.send(idle_work());
        }
    });
    let queued = queue().is_some_and(|queue| queue.send(job).is_ok());
    if queued {
        tokio::select! {
            biased;
            done = &mut receiver => return done.expect(PANICKED),
            () = hurry => {}
        }
    }
    // A core's worth at a time: everything the build left to store may be hurried at once, and each
    // job holds a whole file and its compressed copy.
    let now = async {
        let permit = normal_priority_slots().acquire().await.expect("the semaphore is never closed");
        let done = tokio::task::spawn_blocking(move || work()).await;
        drop(permit);
        done
    };
    tokio::select! {
        done = &mut receiver, if queued => done.expect(PANICKED),
        done = now => done.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
    }
}

fn normal_priority_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(cores()))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The sender is dropped unsent only when `work` panicked (the panic is printed where it ran).
const PANICKED: &str = "a background job panicked";

/// The queue of the idle threads, started on first use: one per core, so that what is left when the
/// compiles end takes all of them. `None` if not one could be started.
fn queue() -> Option<&'static mpsc::Sender<Job>> {
    static QUEUE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Job>();
            let receiver = Arc::new(Mutex::new(receiver));
            let started = (0..cores()).filter(|_| start_thread(&receiver)).count();
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
    use std::future::pending;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    fn policy() -> i32 {
        // SAFETY: sched_getscheduler has no memory-safety preconditions.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[tokio::test]
    async fn work_runs_at_idle_priority_and_its_result_comes_back() {
        assert_eq!(super::run(policy, pending()).await, libc::SCHED_IDLE);
        assert_eq!(super::run(|| (1..=10).sum::<u32>(), pending()).await, 55);
        // The caller's thread keeps its priority.
        assert_eq!(policy(), libc::SCHED_OTHER);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hurried_work_runs_at_normal_priority_a_core_at_a_time_when_the_idle_threads_are_busy() {
        // Every idle thread held by a job that waits for the test to let it go.
        let threads = super::cores();
        let (started, release) = (Arc::new(Barrier::new(threads + 1)), Arc::new(Barrier::new(threads + 1)));
        let mut holders = Vec::new();
        for _ in 0..threads {
            let (started, release) = (Arc::clone(&started), Arc::clone(&release));
            holders.push(tokio::spawn(super::run(
                move || {
                    started.wait();
                    release.wait();
                },
                pending(),
            )));
        }
        tokio::task::spawn_blocking({
            let started = Arc::clone(&started);
            move || started.wait()
        })
        .await
        .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let work = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            policy()
        };
        let hurried =
            tokio::time::timeout(std::time::Duration::from_secs(30), super::run(work, std::future::ready(())));
        assert_eq!(hurried.await.expect("not left waiting for an idle thread"), libc::SCHED_OTHER);

        // Many hurried at once run a core's worth at a time.
        let (active, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut hurried = tokio::task::JoinSet::new();
        for _ in 0..4 * threads {
            let (active, most) = (Arc::clone(&active), Arc::clone(&most));
            let work = move || {
                most.fetch_max(active.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                active.fetch_sub(1, Ordering::SeqCst);
            };
            hurried.spawn(super::run(work, std::future::ready(())));
        }
        hurried.join_all().await;
        assert_eq!(most.load(Ordering::SeqCst), threads);

        tokio::task::spawn_blocking(move || release.wait()).await.unwrap();
        for holder in holders {
            holder.await.unwrap();
        }
        // The queued copy found the result delivered and did not run.
        super::run(|| (), pending()).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
