//! When a TCP connection's task polls its socket instead of parking: for a while
//! after traffic, and all the while its client streams, so that the CPU does not go
//! idle between a client's messages.
//!
//! A broker that parks between messages leaves both CPUs of a small machine idle
//! while a client waits on its own threads, and Linux then spreads those threads
//! over the idle CPUs: each hand-over between them (lapin's caller and its I/O
//! thread, for every publish and every ack) wakes an idle CPU, which on a VM costs
//! tens of microseconds. lapin published 16 B at about 19 000 msg/s into a Warren
//! that parked, and at 129 000–142 000 into one that polls, on a 2-vCPU VM where
//! RabbitMQ took 66 000–76 000 (`bench/PROFILE.md`). RabbitMQ 3.10 does not
//! busy-wait (`rabbitmq-env:133,138` at v3.10.8 pass `+sbwt none`); its
//! schedulers stay busy with their own work per message, which keeps a CPU awake
//! just the same.
//!
//! Between two polls the task stays inside its own poll, and goes back to the
//! runtime only when it woke another connection's task (which waits on the same
//! worker), when something it waits for changed, or after [`SPIN`] at most. Each
//! return costs a wake-up elsewhere: tokio's last searching worker hands work on
//! as it finds it, so every return with nothing else to run woke the runtime's
//! parked worker, which then ran on the CPU the client needed. Going back between
//! every two polls did that 50 000–58 000 times a second beside one Go client
//! (`bench/PROFILE.md`).
//!
//! The cost is bounded four ways. One connection of a broker polls at a time (the
//! permit, `Shared::spinner`), so at most one CPU. Polling stops [`Config::busy_wait`]
//! after the last traffic (1 ms by default; zero turns it off). And between two
//! polls the task yields its CPU to any other thread that wants it; when a quarter
//! of a window of yields let another thread run, the CPU is not idle, polling only
//! takes from that thread, and it rests for [`REST`]. A client whose reads come
//! in large (32 KiB or more at once) gives the connection enough work to keep its
//! CPU awake, so it does not poll beside it. Nor, while it streams, beside a
//! client that writes each frame of a publish with its own system call (Go's
//! amqp091, pika: a quarter or more of its reads end inside a publish): those
//! calls keep its own CPU busy, and polling beside it took CPU time it needed (one
//! Go connection's 50 000 publishes took 0.33–0.76 s polled beside, 0.30–0.34 s
//! not; lapin, whose writes carry whole publishes, is still polled beside). It
//! is off where it cannot help: a process allowed one CPU, or a single-threaded
//! runtime.
//!
//! [`Config::busy_wait`]: crate::config::Config::busy_wait

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a polling task stays away from the runtime when nothing wants it.
pub const SPIN: Duration = Duration::from_micros(200);
/// How long a connection's task polls after traffic, by default.
pub const DEFAULT: Duration = Duration::from_millis(1);
/// A yield that took this long let another thread run on the CPU.
const CONTENDED: Duration = Duration::from_micros(20);
/// Yields per judgement of whether the CPU is wanted by others.
const WINDOW: u32 = 64;
/// How long polling pauses once other threads were found to want its CPU.
pub const REST: Duration = Duration::from_millis(2);
/// Reads per judgement of whether the client writes a publish frame by frame.
const READS: u32 = 64;
/// A read that found this much waiting shows a client pushing hard: the
/// connection's own work keeps its CPU awake, and polling would only take CPU
/// time from the client (one Go connection publishing 4 KiB: 146 000–165 000
/// msg/s parked, 70 000–97 000 polling).
const HEAVY_READ: usize = 32 * 1024;

/// Whether polling can keep a CPU awake for the client: not when the process may
/// use a single CPU (the one the client needs, or a container's quota that polling
/// would spend), nor on a single-threaded runtime, whose one thread the client's
/// own tasks may share.
pub fn helps() -> bool {
    cpus() >= 2
        && tokio::runtime::Handle::try_current().is_ok_and(|h| h.metrics().num_workers() >= 2)
}

/// The CPUs the process may use, read once. A broker reads it when it starts
/// (`Shared::new`), before `--cpu-binding spread` binds the runtime's workers to
/// one CPU each, which would make a worker's own count 1.
pub fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

thread_local! {
    static WAKES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A connection's task is about to be woken from this thread (an append to its
/// outbox, a command). A task woken from a runtime's worker waits on that worker,
/// so a polling task that woke one must go back to the runtime for it to run.
pub fn woke_a_task() {
    WAKES.with(|n| n.set(n.get().wrapping_add(1)));
}

/// How many times this thread has woken a connection's task (`woke_a_task`).
pub fn wakes_here() -> u64 {
    WAKES.with(std::cell::Cell::get)
}

/// One connection's busy wait: the decision, free of sockets, and the permit.
#[derive(Debug)]
pub struct BusyWait {
    wait: Duration,
    busy_until: Option<Instant>,
    rest_until: Option<Instant>,
    /// The last read brought at least `HEAVY_READ` bytes.
    heavy: bool,
    /// Reads in this judgement, and those that ended inside a publish.
    reads: u32,
    split: u32,
    /// A quarter or more of the last `READS` reads ended inside a publish: the
    /// client writes each frame with its own system call.
    frame_by_frame: bool,
    yields: u32,
    contended: u32,
    /// The broker's one permit to poll, and whether this connection holds it.
    permit: Arc<AtomicBool>,
    holding: bool,
}

impl BusyWait {
    /// Polls for `wait` after traffic (zero: never), holding `permit` meanwhile.
    pub fn new(wait: Duration, permit: Arc<AtomicBool>) -> Self {
        Self {
            wait,
            busy_until: None,
            rest_until: None,
            heavy: false,
            reads: 0,
            split: 0,
            frame_by_frame: false,
            yields: 0,
            contended: 0,
            permit,
            holding: false,
        }
    }

    /// Bytes went either way at `now`.
    pub fn traffic(&mut self, now: Instant) {
        self.busy_until = Some(now + self.wait);
    }

    /// A read at `now` found `bytes` waiting; `split`: it ended inside a publish
    /// (its method or header came, the rest of it not yet).
    pub fn read(&mut self, now: Instant, bytes: usize, split: bool) {
        self.traffic(now);
        self.heavy = bytes >= HEAVY_READ;
        self.reads += 1;
        self.split += u32::from(split);
        if self.reads == READS {
            self.frame_by_frame = self.split * 4 >= READS;
            (self.reads, self.split) = (0, 0);
        }
    }

    /// Whether the task should poll at `now` rather than park (`streaming`: the
    /// pacer batches the client's reads), taking or giving back the permit.
    pub fn poll(&mut self, now: Instant, streaming: bool) -> bool {
        // Beside a client whose stream keeps its own CPU busy, it parks.
        let left_alone = self.heavy || (streaming && self.frame_by_frame);
        let wanted = !self.wait.is_zero()
            && !left_alone
            && self.rest_until.is_none_or(|t| now >= t)
            && (streaming || self.busy_until.is_some_and(|t| now < t));
        if wanted && !self.holding {
            self.holding = !self.permit.swap(true, Ordering::Acquire);
        } else if !wanted && self.holding {
            self.release();
        }
        self.holding
    }

    /// A yield between two polls, ending at `now`, took `took`.
    pub fn yielded(&mut self, now: Instant, took: Duration) {
        self.yields += 1;
        if took > CONTENDED {
            self.contended += 1;
        }
        if self.yields == WINDOW {
            if self.contended * 4 >= WINDOW {
                self.busy_until = None;
                self.rest_until = Some(now + REST);
            }
            (self.yields, self.contended) = (0, 0);
        }
    }

    /// Gives the permit back, if held, until the next `poll`.
    pub fn stop(&mut self) {
        if self.holding {
            self.release();
        }
    }

    /// Never polls again (the socket cannot hold arrivals back).
    pub fn disable(&mut self) {
        self.wait = Duration::ZERO;
        self.stop();
    }

    fn release(&mut self) {
        self.holding = false;
        self.permit.store(false, Ordering::Release);
    }
}

impl Drop for BusyWait {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn polls_for_the_wait_after_traffic_and_all_the_while_a_client_streams() {
        let mut b = BusyWait::new(MS, Arc::default());
        let t = Instant::now();
        assert!(!b.poll(t, false), "polled before any traffic");
        b.traffic(t);
        assert!(b.poll(t + MS / 2, false));
        assert!(!b.poll(t + MS, false), "polled past the wait");
        assert!(
            b.poll(t + 100 * MS, true),
            "a streaming client was left to park"
        );
    }

    #[test]
    fn a_client_pushing_large_reads_is_left_the_cpu() {
        let mut b = BusyWait::new(MS, Arc::default());
        let t = Instant::now();
        b.read(t, HEAVY_READ, false);
        assert!(
            !b.poll(t, true),
            "polled beside a client filling the socket"
        );
        b.read(t, HEAVY_READ - 1, false);
        assert!(b.poll(t, true));
    }

    #[test]
    fn a_client_writing_each_frame_alone_is_left_the_cpu_while_it_streams() {
        let mut b = BusyWait::new(MS, Arc::default());
        let t = Instant::now();
        // Whole publishes per read (lapin, amqplib): polled beside.
        for _ in 0..READS {
            b.read(t, 73, false);
        }
        assert!(b.poll(t, true));
        // One read in three ends between a publish's frames (Go's amqp091 and
        // pika write each frame on its own): left to park while it streams...
        for i in 0..READS {
            b.read(t, 33, i % 3 == 0);
        }
        assert!(!b.poll(t, true), "polled beside a frame-by-frame streamer");
        // ...but still polled for the wait after traffic, where a reply may be due.
        assert!(b.poll(t, false));
        // One in five: its writes are mostly whole, polled again.
        for i in 0..READS {
            b.read(t, 73, i % 5 == 0);
        }
        assert!(b.poll(t, true));
    }

    #[test]
    fn a_zero_wait_never_polls() {
        let mut b = BusyWait::new(Duration::ZERO, Arc::default());
        let t = Instant::now();
        b.traffic(t);
        assert!(!b.poll(t, false));
        assert!(!b.poll(t, true));
    }

    #[test]
    fn one_connection_of_a_broker_polls_at_a_time() {
        let permit = Arc::new(AtomicBool::new(false));
        let mut a = BusyWait::new(MS, permit.clone());
        let mut b = BusyWait::new(MS, permit.clone());
        let other_broker = BusyWait::new(MS, Arc::default());
        let t = Instant::now();
        assert!(a.poll(t, true));
        assert!(!b.poll(t, true), "two connections polled at once");
        let mut other_broker = other_broker;
        assert!(
            other_broker.poll(t, true),
            "another broker's permit was taken"
        );
        assert!(!a.poll(t, false));
        assert!(b.poll(t, true), "the permit was not given back");
        drop(b);
        assert!(a.poll(t, true), "a dropped connection kept the permit");
    }

    #[test]
    fn a_cpu_other_threads_keep_running_on_is_left_to_them_for_a_rest() {
        let mut b = BusyWait::new(MS, Arc::default());
        let mut t = Instant::now();
        b.traffic(t);
        // Yields that come straight back: the CPU is nobody else's.
        for _ in 0..10 * WINDOW {
            b.yielded(t, Duration::from_micros(1));
        }
        assert!(b.poll(t, true));
        // A window of yields where one in `every` let another thread run.
        let window = |b: &mut BusyWait, every: u32| {
            for i in 0..WINDOW {
                let took = if i % every == 0 {
                    10 * CONTENDED
                } else {
                    Duration::ZERO
                };
                b.yielded(t, took);
            }
        };
        // One yield in five let another thread run: still polling.
        window(&mut b, 5);
        assert!(b.poll(t, true));
        // One in three: the CPU is wanted, so polling rests, streaming or not.
        window(&mut b, 3);
        assert!(!b.poll(t, true));
        assert!(!b.poll(t + REST / 2, true));
        t += REST;
        assert!(b.poll(t, true), "polling never came back after its rest");
        assert!(
            !b.poll(t, false),
            "the rest should have ended the wait after traffic"
        );
    }
}
