//! CPU of the whole core under test, from `/proc/stat`, over a measurement window: what the
//! system under test costs including the work the kernel does for it on that core (softirq,
//! ksoftirqd), which per-process CPU time misses.
//!
//! A sampler thread reads the core's line of `/proc/stat`, the process's and ksoftirqd's CPU
//! times and the core's `/proc/net/softnet_stat` row every [`PERIOD`]; `CoreUse::over` takes
//! the samples that bound loadgen's send window and turns their differences into shares of it.
//!
//! The core's busy share is one minus its idle share of the wall-clock time between the two
//! samples. A tickless kernel measures idle time when a CPU leaves idle, but charges the busy
//! fields (user, system, softirq...) one tick at a time to whatever runs when the tick fires, and
//! a core that sleeps thousands of times a second between short bursts of work is mostly idle
//! when its tick would fire: measured with the relay's worker, the busy fields gave 3-8% where
//! the idle time and the worker's own run time (schedstat) both gave 36-41%. The busy fields
//! only split the busy share. CPU times of tasks come from `schedstat` (nanoseconds run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;

/// How often the sampler reads.
pub const PERIOD: Duration = Duration::from_millis(10);

/// The `/proc/stat` fields of one core, in clock ticks (USER_HZ).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// user (guest time included), nice, system, idle, iowait, irq, softirq, steal.
    pub f: [u64; 8],
}

/// Clock ticks a second in `/proc/stat` (USER_HZ).
pub fn user_hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

impl CpuTicks {
    /// The busy share of the `seconds` between `earlier` and this reading: one minus the
    /// measured idle share (see the module's comment for why not the sampled busy fields).
    pub fn busy_since(&self, earlier: &Self, seconds: f64) -> f64 {
        let idle = self.idle().saturating_sub(earlier.idle()) as f64;
        (1.0 - idle / (seconds * user_hz()).max(1.0)).clamp(0.0, 1.0)
    }

    /// Busy ticks as sampled: user + nice + system + irq + softirq + steal.
    pub fn busy(&self) -> u64 {
        let f = &self.f;
        f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
    }

    /// Idle: idle + iowait.
    pub fn idle(&self) -> u64 {
        self.f[3] + self.f[4]
    }

    fn minus(&self, earlier: &Self) -> Self {
        let mut f = [0; 8];
        for (i, v) in f.iter_mut().enumerate() {
            *v = self.f[i].saturating_sub(earlier.f[i]);
        }
        Self { f }
    }
}

/// Parses the `cpuN` line of `/proc/stat` text.
pub fn parse_stat(text: &str, core: usize) -> Option<CpuTicks> {
    let name = format!("cpu{core}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let mut f = [0; 8];
    let mut fields = line.split_whitespace().skip(1);
    for v in &mut f {
        *v = fields.next()?.parse().ok()?;
    }
    Some(CpuTicks { f })
}

/// Row `core` of `/proc/net/softnet_stat`: packets processed, dropped (backlog full) and
/// time squeezes (the softirq ran out of budget or time with work left).
pub fn parse_softnet(text: &str, core: usize) -> Option<[u64; 3]> {
    // Rows are per online CPU in order; the 13th column (when present) names the CPU.
    let rows: Vec<&str> = text.lines().collect();
    let row = rows
        .iter()
        .find(|l| {
            l.split_whitespace()
                .nth(12)
                .and_then(|c| u64::from_str_radix(c, 16).ok())
                == Some(core as u64)
        })
        .or_else(|| rows.get(core))?;
    let mut cols = row.split_whitespace();
    let mut out = [0; 3];
    for v in &mut out {
        *v = u64::from_str_radix(cols.next()?, 16).ok()?;
    }
    Some(out)
}

/// Field `i` of a task's `schedstat`: 0 is nanoseconds run, 1 nanoseconds runnable but waiting.
fn schedstat(path: &std::path::Path, i: usize) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .nth(i)?
        .parse()
        .ok()
}

/// What the scheduler did with the threads of process `pid`, summed over them: nanoseconds run
/// and nanoseconds runnable but waiting for a CPU (`schedstat`), and voluntary and involuntary
/// context switches (`status`): a sleep that ended, and a preemption by another task.
fn sched_counts(pid: u32) -> Option<[u64; 4]> {
    let mut total = [0; 4];
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let stat = e.path().join("schedstat");
        total[0] += schedstat(&stat, 0).unwrap_or(0);
        total[1] += schedstat(&stat, 1).unwrap_or(0);
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        for (i, key) in [
            (2, "voluntary_ctxt_switches:"),
            (3, "nonvoluntary_ctxt_switches:"),
        ] {
            total[i] += status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// The PID of `ksoftirqd/<core>`, found by name.
pub fn ksoftirqd(core: usize) -> Option<u32> {
    let want = format!("ksoftirqd/{core}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == want).then_some(pid)
    })
}

/// One reading.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: CpuTicks,
    /// Run time of the process's threads (ns), their run-queue wait (ns), their voluntary and
    /// involuntary context switches.
    sched: [u64; 4],
    /// Run time of the core's ksoftirqd (ns).
    ksoftirqd: u64,
    softnet: [u64; 3],
}

/// Samples one core, one process and that core's ksoftirqd until stopped.
pub struct Sampler {
    core: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling `core` and process `pid` (all its threads).
    pub fn start(core: usize, pid: u32) -> Result<Self> {
        let softirqd = ksoftirqd(core);
        let read = move || -> Option<Sample> {
            let stat = std::fs::read_to_string("/proc/stat").ok()?;
            let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
            Some(Sample {
                at: Instant::now(),
                cpu: parse_stat(&stat, core)?,
                sched: sched_counts(pid)?,
                ksoftirqd: softirqd
                    .and_then(|k| schedstat(format!("/proc/{k}/schedstat").as_ref(), 0))
                    .unwrap_or(0),
                softnet: parse_softnet(&softnet, core).unwrap_or_default(),
            })
        };
        let first = read().ok_or_else(|| anyhow!("cannot read /proc/stat for core {core}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("core-sampler".into())
            .spawn(move || {
                let mut samples = vec![first];
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(PERIOD);
                    if let Some(s) = read() {
                        samples.push(s);
                    }
                }
                samples
            })?;
        Ok(Self {
            core,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops and returns the core's use over `window` (loadgen's send window), with
    /// `packets_per_s` forwarded packets a second for the per-packet figures.
    pub fn finish(
        mut self,
        window: Option<(Instant, Instant)>,
        packets_per_s: f64,
    ) -> Option<CoreUse> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.take()?.join().ok()?;
        CoreUse::over(self.core, &samples, window?, packets_per_s)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one core did over a window, as shares of its wall-clock time (0 to 1).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CoreUse {
    /// The core.
    pub core: usize,
    /// Seconds between the two samples used.
    pub seconds: f64,
    /// One minus the idle share: everything that ran on the core.
    pub busy: f64,
    /// The busy share split by the sampled ticks: user (and nice).
    pub user: f64,
    /// system.
    pub system: f64,
    /// softirq (in a task's context or in ksoftirqd).
    pub softirq: f64,
    /// irq.
    pub irq: f64,
    /// steal (the hypervisor ran something else).
    pub steal: f64,
    /// The process under test (all its threads; softirq run in its context included).
    pub process: f64,
    /// ksoftirqd of this core: softirq work deferred to a thread, charged to no process.
    pub ksoftirqd: f64,
    /// Everything else busy on the core (busy - process - ksoftirqd): other processes,
    /// interrupts, softirq in other tasks' context.
    pub other: f64,
    /// Time the process's threads were runnable but waited for the core (schedstat run
    /// delay, summed over threads), as a share of the window: above a few per cent something
    /// else competed for the core and the latency figures measured that competition.
    pub runqueue_wait: f64,
    /// The process's voluntary context switches per second (a worker that sleeps when its
    /// socket runs dry switches once per sleep): how often it paid a wake-up.
    pub sleeps_per_s: f64,
    /// Its involuntary context switches per second: how often another task took the core
    /// from it.
    pub preempted_per_s: f64,
    /// Busy core time per forwarded packet, ns.
    pub busy_ns_per_packet: Option<f64>,
    /// The process's CPU time per forwarded packet, ns.
    pub process_ns_per_packet: Option<f64>,
    /// softnet_stat of the core over the window: packets its softirq processed, dropped at a
    /// full backlog, and time squeezes.
    pub softnet: [u64; 3],
}

impl CoreUse {
    /// The use between the first sample at or after the window's start and the last at or
    /// before its end. None when fewer than two samples fall inside.
    fn over(
        core: usize,
        samples: &[Sample],
        (from, to): (Instant, Instant),
        packets_per_s: f64,
    ) -> Option<Self> {
        let a = samples.iter().find(|s| s.at >= from)?;
        let b = samples.iter().rev().find(|s| s.at <= to)?;
        if b.at <= a.at {
            return None;
        }
        let seconds = (b.at - a.at).as_secs_f64();
        let d = b.cpu.minus(&a.cpu);
        let busy = b.cpu.busy_since(&a.cpu, seconds);
        // The sampled busy ticks only say how the busy share divides.
        let sampled = d.busy() as f64;
        let share = |t: u64| {
            if sampled > 0.0 {
                busy * t as f64 / sampled
            } else {
                0.0
            }
        };
        let ran = |ns: u64| ns as f64 / 1e9 / seconds;
        let process = ran(b.sched[0].saturating_sub(a.sched[0]));
        let ksoftirqd = ran(b.ksoftirqd.saturating_sub(a.ksoftirqd));
        let per_packet = |s: f64| (packets_per_s > 0.0).then(|| s * 1e9 / packets_per_s);
        let mut softnet = [0; 3];
        for (i, v) in softnet.iter_mut().enumerate() {
            *v = b.softnet[i].saturating_sub(a.softnet[i]);
        }
        Some(Self {
            core,
            seconds,
            busy,
            user: share(d.f[0] + d.f[1]),
            system: share(d.f[2]),
            softirq: share(d.f[6]),
            irq: share(d.f[5]),
            steal: share(d.f[7]),
            process,
            ksoftirqd,
            other: (busy - process - ksoftirqd).max(0.0),
            runqueue_wait: ran(b.sched[1].saturating_sub(a.sched[1])),
            sleeps_per_s: b.sched[2].saturating_sub(a.sched[2]) as f64 / seconds,
            preempted_per_s: b.sched[3].saturating_sub(a.sched[3]) as f64 / seconds,
            busy_ns_per_packet: per_packet(busy),
            process_ns_per_packet: per_packet(process),
            softnet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  10 0 20 300 4 0 5 1 0 0\n\
                        cpu0 6 0 12 100 2 0 3 1 0 0\n\
                        cpu1 4 0 8 200 2 0 2 0 0 0\n\
                        intr 1 2 3\n";

    #[test]
    fn stat_lines_of_one_core() {
        let c0 = parse_stat(STAT, 0).unwrap();
        assert_eq!(c0.f, [6, 0, 12, 100, 2, 0, 3, 1]);
        assert_eq!((c0.busy(), c0.idle()), (22, 102));
        assert_eq!(parse_stat(STAT, 1).unwrap().busy(), 14);
        assert!(parse_stat(STAT, 2).is_none());
        assert!(
            parse_stat("cpu0 1 2\n", 0).is_none(),
            "short lines are refused"
        );
    }

    #[test]
    fn softnet_rows_by_cpu_column_or_position() {
        let text = "0003d374 00000002 00000003 0 0 0 0 0 0 0 0 0 00000000 0 0\n\
                    00042d34 00000000 00000010 0 0 0 0 0 0 0 0 0 00000001 0 0\n";
        assert_eq!(parse_softnet(text, 0), Some([0x3d374, 2, 3]));
        assert_eq!(parse_softnet(text, 1), Some([0x42d34, 0, 16]));
        let old = "00000001 00000002 00000003\n";
        assert_eq!(parse_softnet(old, 0), Some([1, 2, 3]));
    }

    #[test]
    fn shares_come_from_the_samples_inside_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let hz = user_hz() as u64;
        // Ticks in hundredths of a second, whatever USER_HZ is.
        let t = |hundredths: u64| hundredths * hz / 100;
        let ms_ns = 1_000_000;
        let sample = |ms: u64, user, idle, softirq, process_ms: u64, ksoftirqd_ms: u64| Sample {
            at: at(ms),
            cpu: CpuTicks {
                f: [t(user), 0, 0, t(idle), 0, 0, t(softirq), 0],
            },
            sched: [process_ms * ms_ns, ms * 10_000, ms * 3, ms],
            ksoftirqd: ksoftirqd_ms * ms_ns,
            softnet: [ms, 0, 0],
        };
        let samples = [
            sample(0, 0, 0, 0, 0, 0),
            sample(100, 5, 5, 0, 50, 0),
            // Inside the window (1 s): 20 idle, so 80% busy; the sampled ticks (30 user, 10
            // softirq) miss half of it and only split it 3:1. The process ran 500 ms,
            // ksoftirqd 100 ms.
            sample(1100, 35, 25, 10, 550, 100),
            sample(1200, 100, 100, 100, 1000, 1000),
        ];
        let u = CoreUse::over(0, &samples, (at(50), at(1150)), 1000.0).unwrap();
        assert!((u.busy - 0.8).abs() < 1e-6, "{}", u.busy);
        assert!((u.user - 0.6).abs() < 1e-6 && (u.softirq - 0.2).abs() < 1e-6);
        assert!((u.process - 0.5).abs() < 1e-6 && (u.ksoftirqd - 0.1).abs() < 1e-6);
        assert!((u.other - 0.2).abs() < 1e-6);
        assert!((u.busy_ns_per_packet.unwrap() - 800_000.0).abs() < 1e-3);
        assert_eq!(u.softnet[0], 1000);
        assert!((u.runqueue_wait - 0.01).abs() < 1e-9, "{}", u.runqueue_wait);
        assert!((u.sleeps_per_s - 3000.0).abs() < 1e-6, "{}", u.sleeps_per_s);
        assert!((u.preempted_per_s - 1000.0).abs() < 1e-6);
        assert!(CoreUse::over(0, &samples, (at(150), at(1050)), 1.0).is_none());
    }
}
