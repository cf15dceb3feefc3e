//! Resource alarms as RabbitMQ has them, on by default: the memory high
//! watermark (relative to the memory the process may use), the disk free limit
//! under the data directory, and the file descriptors left for connections.
//!
//! What RabbitMQ 3.10.8 does (rabbitmq-server at v3.10.8):
//! - `deps/rabbit_common/src/vm_memory_monitor.erl:280-285`: the memory in use is
//!   the process's resident set, read from `/proc/PID/statm` (its default
//!   `vm_memory_calculation_strategy`, `rss`), every second
//!   (`include/rabbit_memory.hrl:8`, `DEFAULT_MEMORY_CHECK_INTERVAL`).
//! - `vm_memory_monitor.erl:85-100,508-512`: the total it is relative to is
//!   `MemTotal` from `/proc/meminfo` unless `total_memory_available_override_value`
//!   is set; the watermark is 0.4 of it (`include/rabbit_memory.hrl:15`), or an
//!   absolute figure (`:383-404`). The alarm is on while the memory in use is
//!   above it (`:406-418`). RabbitMQ reads no cgroup limit, so in a container it
//!   takes the host's memory for its own and is OOM-killed before its alarm
//!   rises; Warren takes the smaller of `MemTotal` and the cgroup's limit (v1
//!   `memory.limit_in_bytes` or v2 `memory.max`, of its cgroup and each parent).
//! - `deps/rabbit/src/rabbit_disk_monitor.erl:39,280`: the disk alarm is on while
//!   the free space is below `disk_free_limit`, 50 000 000 bytes by default.
//!
//! Warren measures every 100 ms, and between two measures adds the message
//! bytes taken in since (`memory::Gauge::add`), so that a flood is stopped on
//! the message that crosses the watermark. Reading `statm` costs one small
//! read; `statvfs` one system call.
//!
//! Freed memory that the allocator keeps (glibc returns little of a fragmented
//! heap to the system) still counts in the resident set, so a broker whose
//! consumers drained the queues could stay above the watermark, blocked, for
//! good. Warren counts that memory as free: message bytes released while the
//! resident set did not shrink are a credit taken off the resident set, used up
//! again by later messages (which reuse that memory first) and by the resident
//! set shrinking.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::memory::{Gauge, DISK};

/// How often memory and disk are measured.
const INTERVAL: Duration = Duration::from_millis(100);

/// RabbitMQ's default `vm_memory_high_watermark`.
pub const DEFAULT_RELATIVE: f64 = 0.4;

/// RabbitMQ's default `disk_free_limit`, in bytes.
pub const DEFAULT_DISK_FREE_LIMIT: u64 = 50_000_000;

/// File descriptors kept for everything but client sockets (the log's
/// segments, listeners, the management API, files a test opens).
const FD_RESERVE: u64 = 64;

/// Descriptors per TCP connection: its socket, and the duplicate the pacer
/// sets `SO_RCVLOWAT` through (`pacing::PacedSocket`).
const FDS_PER_CONNECTION: u64 = 2;

/// Where the memory alarm rises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MemoryHighWatermark {
    /// A fraction of the memory the process may use (the cgroup limit where
    /// there is one, else physical memory). 0 turns the alarm off.
    Relative(f64),
    /// Bytes of process memory. 0 turns the alarm off.
    Absolute(u64),
}

impl Default for MemoryHighWatermark {
    fn default() -> Self {
        MemoryHighWatermark::Relative(DEFAULT_RELATIVE)
    }
}

impl MemoryHighWatermark {
    /// `0.4` (a fraction: it has a decimal point), `268435456`, `256MiB`,
    /// `2GB` (bytes, with RabbitMQ's units: kB, MB, GB are powers of ten,
    /// KiB, MiB, GiB of two), `0` (off).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.contains('.') {
            let f: f64 = s
                .parse()
                .map_err(|_| format!("'{s}' is neither a fraction nor a size"))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("a relative watermark is between 0 and 1, not {s}"));
            }
            return Ok(MemoryHighWatermark::Relative(f));
        }
        parse_size(s).map(MemoryHighWatermark::Absolute)
    }

    /// The watermark in bytes, given the memory the process may use; 0: off.
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            MemoryHighWatermark::Relative(f) => (available as f64 * f) as u64,
            MemoryHighWatermark::Absolute(b) => b,
        }
    }
}

/// A size in bytes: digits, then an optional unit (kB, MB, GB, KiB, MiB, GiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("'{s}' is not a size"))?;
    let unit = match s[digits..].trim() {
        "" | "B" => 1,
        "k" | "kB" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        other => return Err(format!("unknown unit '{other}' in '{s}'")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// The memory this process may use: the smaller of physical memory and its
/// cgroup's limit. `None` where neither can be read. Read once per process:
/// RabbitMQ reads it when a node sets its limit at start (`set_mem_limits/2`,
/// `rabbit_common/src/vm_memory_monitor.erl:187-194,317-328` at v3.10.8), and a
/// test process starts hundreds of brokers, each paying ~30 µs for the files.
pub fn memory_available() -> Option<u64> {
    static AVAILABLE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(read_memory_available)
}

fn read_memory_available() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_total(&m));
    match (total, cgroup_limit()) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The tightest memory limit of this process's cgroup and its parents.
fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_in(Path::new("/sys/fs/cgroup"), &cgroups)
}

/// For `/proc/self/cgroup`'s text, with the hierarchies mounted under `root`.
fn cgroup_limit_in(root: &Path, cgroups: &str) -> Option<u64> {
    let mut best: Option<u64> = None;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (dir, file) = if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else {
            continue;
        };
        // In a container the hierarchy is often mounted at the process's own
        // cgroup, where its path names nothing: then the mount's root is it.
        let mut at = dir.join(path.trim_start_matches('/'));
        if !at.exists() {
            at = dir.clone();
        }
        loop {
            if let Some(limit) = read_limit(&at.join(file)) {
                best = Some(best.map_or(limit, |b| b.min(limit)));
            }
            if at == dir || !at.pop() {
                break;
            }
        }
    }
    best
}

/// A cgroup limit file: "max" or a figure near `i64::MAX` is no limit.
fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let n: u64 = text.trim().parse().ok()?;
    (n < 1 << 62).then_some(n)
}

/// The resident set of this process, from `/proc/self/statm`, as RabbitMQ's
/// `rss` strategy reads it.
pub fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    #[cfg(target_os = "linux")]
    {
        rustix::param::page_size() as u64
    }
    #[cfg(not(target_os = "linux"))]
    {
        4096
    }
}

/// Free bytes on the file system holding `dir`, as `df` shows them to a user
/// who is not root (`f_bavail`).
pub fn disk_free(dir: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let st = rustix::fs::statvfs(dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// The memory figure from resident-set measures, less the freed memory the
/// allocator kept (see the module's note).
#[derive(Debug, Default)]
struct Meter {
    credit: u64,
    last_rss: u64,
    last_bytes: usize,
}

impl Meter {
    fn used(&mut self, rss: u64, bytes: usize) -> u64 {
        let freed = self.last_bytes.saturating_sub(bytes) as u64;
        let added = bytes.saturating_sub(self.last_bytes) as u64;
        let shrunk = self.last_rss.saturating_sub(rss);
        self.credit = (self.credit + freed)
            .saturating_sub(added)
            .saturating_sub(shrunk)
            .min(rss);
        self.last_rss = rss;
        self.last_bytes = bytes;
        rss - self.credit
    }
}

/// What the monitor watches, fixed at start.
#[derive(Debug)]
pub(crate) struct Limits {
    pub data_dir: Option<PathBuf>,
    /// Bytes; 0: no disk alarm.
    pub disk_free_limit: u64,
}

/// The watermark in bytes for `config`, logged once as RabbitMQ logs it.
pub(crate) fn watermark_bytes(watermark: MemoryHighWatermark) -> u64 {
    let available = memory_available().unwrap_or(0);
    let bytes = watermark.bytes(available);
    if bytes > 0 {
        tracing::debug!(
            "memory high watermark set to {} MiB ({bytes} bytes) of {} MiB available",
            bytes >> 20,
            available >> 20
        );
    }
    bytes
}

/// Measures memory and disk until `stop`, raising and clearing the alarms.
pub(crate) async fn monitor(gauge: Arc<Gauge>, limits: Limits, mut stop: watch::Receiver<bool>) {
    let mut meter = Meter::default();
    // The first measure one interval after start: a broker that lives for a
    // test's few hundred microseconds has no memory to watch.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut disk_alarm = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if gauge.high_watermark() > 0 {
            if let Some(rss) = resident_memory() {
                let bytes = gauge.bytes();
                let used = meter.used(rss, bytes);
                if let Some(on) = gauge.measured(used, bytes) {
                    // RabbitMQ's log line (vm_memory_monitor.erl:420-423).
                    tracing::warn!(
                        "vm_memory_high_watermark {}. Memory used:{used} allowed:{}",
                        if on { "set" } else { "clear" },
                        gauge.high_watermark()
                    );
                }
            }
        }
        if let (Some(dir), true) = (&limits.data_dir, limits.disk_free_limit > 0) {
            if let Some(free) = disk_free(dir) {
                let on = free < limits.disk_free_limit;
                if on != disk_alarm {
                    disk_alarm = on;
                    // rabbit_disk_monitor.erl:282-288.
                    tracing::warn!(
                        "Free disk space is {}. Free bytes: {free}. Limit: {}",
                        if on { "insufficient" } else { "sufficient" },
                        limits.disk_free_limit
                    );
                    gauge.set(DISK, on);
                }
            }
        }
    }
}

/// How many client connections the file descriptor limit leaves room for.
/// The soft limit is first raised to the hard one, as most servers do (and
/// Go's runtime does for every program), so that a default soft limit of 1024
/// does not cap a broker that the system would let hold thousands. Counted
/// once per process, from the descriptors open at the first broker's start: a
/// test process starts hundreds of brokers, and the count costs each start
/// six system calls.
pub(crate) fn connection_capacity() -> u64 {
    static CAPACITY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CAPACITY.get_or_init(count_connection_capacity)
}

fn count_connection_capacity() -> u64 {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit = raised;
            }
        }
        let Some(soft) = limit.current else {
            return u64::MAX;
        };
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        soft.saturating_sub(open + FD_RESERVE) / FDS_PER_CONNECTION
    }
    #[cfg(not(target_os = "linux"))]
    {
        u64::MAX
    }
}

/// A descriptor held back for the moment the process runs out: closing it
/// lets the accept loop take the connection waiting in the backlog and close
/// it at once, so that the client is refused instead of left hanging.
#[derive(Debug)]
pub(crate) struct Spare(Option<std::fs::File>);

impl Spare {
    pub fn new() -> Spare {
        Spare(Self::open().ok())
    }

    fn open() -> io::Result<std::fs::File> {
        std::fs::File::open("/dev/null")
    }

    /// Gives the descriptor up (before an accept that would otherwise fail).
    pub fn release(&mut self) {
        self.0 = None;
    }

    /// Takes a descriptor back once one is free.
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = Self::open().ok();
        }
    }
}

/// Whether an accept failed for want of descriptors.
pub(crate) fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == 24 || code == 23) // EMFILE, ENFILE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermarks_parse_as_fractions_or_sizes() {
        assert_eq!(
            MemoryHighWatermark::parse("0.4"),
            Ok(MemoryHighWatermark::Relative(0.4))
        );
        assert_eq!(
            MemoryHighWatermark::parse("268435456"),
            Ok(MemoryHighWatermark::Absolute(1 << 28))
        );
        assert_eq!(
            MemoryHighWatermark::parse("256MiB"),
            Ok(MemoryHighWatermark::Absolute(1 << 28))
        );
        assert_eq!(
            MemoryHighWatermark::parse("2GB"),
            Ok(MemoryHighWatermark::Absolute(2_000_000_000))
        );
        assert!(MemoryHighWatermark::parse("1.5").is_err());
        assert!(MemoryHighWatermark::parse("12 parsecs").is_err());
        assert_eq!(MemoryHighWatermark::Relative(0.4).bytes(1000), 400);
    }

    #[test]
    fn cgroup_limits_are_the_tightest_of_the_group_and_its_parents() {
        let root = std::env::temp_dir().join(format!("warren-cgroup-{}", std::process::id()));
        let v1 = root.join("memory/a/b");
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            root.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(root.join("memory/a/memory.limit_in_bytes"), "268435456\n").unwrap();
        std::fs::write(v1.join("memory.limit_in_bytes"), "536870912\n").unwrap();
        assert_eq!(
            cgroup_limit_in(&root, "4:memory:/a/b\n0::/\n"),
            Some(268_435_456)
        );
        // v2: "max" is no limit.
        let v2 = root.join("c");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(v2.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit_in(&root, "0::/c\n"), None);
        std::fs::write(v2.join("memory.max"), "1048576\n").unwrap();
        assert_eq!(cgroup_limit_in(&root, "0::/c\n"), Some(1 << 20));
        // A path that the mount does not show: the mount's root is the group.
        assert_eq!(
            cgroup_limit_in(&root, "4:memory:/elsewhere\n"),
            None,
            "the root's figure is no limit"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn freed_memory_the_allocator_keeps_counts_as_free() {
        let mut m = Meter::default();
        assert_eq!(m.used(100, 0), 100);
        // 60 bytes of messages come in: the resident set grows with them.
        assert_eq!(m.used(160, 60), 160);
        // They are consumed, but the allocator keeps the memory.
        assert_eq!(m.used(160, 0), 100);
        // New messages reuse it first.
        assert_eq!(m.used(160, 40), 140);
        // The allocator gives memory back: the credit goes with it.
        assert_eq!(m.used(120, 40), 120);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(resident_memory().is_some_and(|r| r > 0));
        assert!(memory_available().is_some_and(|m| m > 0));
        assert!(disk_free(&std::env::temp_dir()).is_some());
    }
}
