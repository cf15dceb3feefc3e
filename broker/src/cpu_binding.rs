//! `--cpu-binding spread`: binds the `warren` binary's runtime workers one to a CPU,
//! as RabbitMQ binds its schedulers by default (`+stbt db`:
//! `DEFAULT_SCHEDULER_BIND_TYPE="db"`, deps/rabbit/scripts/rabbitmq-env:117 at
//! v3.10.8).
//!
//! Why: left free, a worker that wakes for a client's frame is put wherever Linux
//! finds room, usually the CPU the client just left, and moves on almost every round
//! trip (31 000 migrations a second over 35 000 round trips, bench/PROFILE.md).
//! Bound, each keeps its CPU and its cache: the raw round trip's p50 went from 25 µs
//! to 17–20 µs on a 2-vCPU VM, Go's and lapin's by 3–5 µs. It is not the default
//! because a single-threaded client then often shares a bound worker's CPU and
//! cannot be escaped: pika's round trip went from 88 µs to 110 µs.
//!
//! Only workers are bound. A thread the runtime starts for blocking work may be
//! started from a bound worker, so each thread is given back the whole process's
//! CPUs when it starts, before a worker binds itself at its first park.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(target_os = "linux")]
mod affinity {
    pub use rustix::thread::CpuSet;
    use rustix::thread::{sched_getaffinity, sched_setaffinity};

    /// Where the calling thread may run now; `None` where the kernel will not say.
    pub fn current() -> Option<CpuSet> {
        sched_getaffinity(None).ok()
    }

    /// The CPUs in the set, lowest first.
    pub fn cpus(set: &CpuSet) -> Vec<usize> {
        (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect()
    }

    /// The set of one CPU.
    pub fn one(cpu: usize) -> CpuSet {
        let mut set = CpuSet::new();
        set.set(cpu);
        set
    }

    /// Confines the calling thread (and the threads it starts from now on) to `set`.
    pub fn apply(set: &CpuSet) -> std::io::Result<()> {
        Ok(sched_setaffinity(None, set)?)
    }
}

/// Elsewhere nothing is bound: there is no set to read.
#[cfg(not(target_os = "linux"))]
mod affinity {
    #[derive(Clone)]
    pub struct CpuSet;

    pub fn current() -> Option<CpuSet> {
        None
    }

    pub fn cpus(_: &CpuSet) -> Vec<usize> {
        Vec::new()
    }

    pub fn one(_: usize) -> CpuSet {
        CpuSet
    }

    pub fn apply(_: &CpuSet) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// The two runtime hooks: `on_thread_start` gives every new thread the process's
/// CPUs, `on_thread_park` binds a worker, the first time it parks, to the next CPU
/// in turn (workers park only between tasks; blocking threads never do).
/// `None` when there is nothing to spread over (one CPU allowed, or unknown).
pub fn hooks() -> Option<(
    impl Fn() + Send + Sync + 'static,
    impl Fn() + Send + Sync + 'static,
)> {
    let all = affinity::current()?;
    let cpus = affinity::cpus(&all);
    if cpus.len() < 2 {
        return None;
    }
    // Several brokers on one machine (a test runner's workers, each with its own)
    // start their workers at different CPUs instead of all on the first.
    let next = AtomicUsize::new(std::process::id() as usize);
    let start = move || {
        let _ = affinity::apply(&all);
    };
    let park = move || {
        thread_local!(static BOUND: Cell<bool> = const { Cell::new(false) });
        BOUND.with(|bound| {
            if !bound.replace(true) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = affinity::apply(&affinity::one(cpus[i % cpus.len()])) {
                    tracing::debug!("runtime worker left unbound: {e}");
                }
            }
        });
    };
    Some((start, park))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime built with the hooks binds each worker to its own CPU, and a
    /// blocking thread started from a bound worker runs on every CPU again.
    #[test]
    fn workers_bound_one_to_a_cpu_and_blocking_threads_free() {
        let Some(all) = affinity::current() else {
            eprintln!("skipped: the kernel does not say where threads may run");
            return;
        };
        let cpus = affinity::cpus(&all);
        let Some((start, park)) = hooks() else {
            eprintln!("skipped: one CPU allowed, nothing to spread over");
            return;
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .on_thread_start(start)
            .on_thread_park(park)
            .enable_all()
            .build()
            .unwrap();
        let (seen, blocking) = rt.block_on(async {
            // Let both workers park once, then ask each where it may run.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let mut seen = Vec::new();
            for _ in 0..20 {
                let set = tokio::spawn(async { affinity::cpus(&affinity::current().unwrap()) })
                    .await
                    .unwrap();
                seen.push(set);
            }
            let blocking = tokio::spawn(async {
                tokio::task::spawn_blocking(|| affinity::cpus(&affinity::current().unwrap()))
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
            (seen, blocking)
        });
        for set in &seen {
            assert_eq!(set.len(), 1, "a worker runs on one CPU, not {set:?}");
            assert!(cpus.contains(&set[0]));
        }
        assert_eq!(blocking, cpus, "a blocking thread may run anywhere");
    }
}
