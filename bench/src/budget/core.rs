//! CPU of the whole core under test, from `/proc/stat`, over a measurement window: what the
//! system under test costs including the work the kernel does for it on that core (softirq,
//! ksoftirqd), which per-process CPU time misses.
//!
//! A sampler thread reads the core's line of `/proc/stat`, the process's and ksoftirqd's CPU
//! times and the core's `/proc/net/softnet_stat` row every [`PERIOD`]; `CoreUse::over` takes
//! the samples that bound loadgen's send window and turns their differences into shares of it.

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

impl CpuTicks {
    /// Busy: user + nice + system + irq + softirq + steal.
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

/// utime + stime of a process or thread, in clock ticks, from its `stat` file.
fn task_ticks(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// What the scheduler did with the threads of process `pid`, summed over them: nanoseconds
/// runnable but waiting for a CPU (`schedstat`, second field), and voluntary and involuntary
/// context switches (`status`): a sleep that ended, and a preemption by another task.
fn sched_counts(pid: u32) -> Option<[u64; 3]> {
    let mut total = [0; 3];
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let text = std::fs::read_to_string(e.path().join("schedstat")).unwrap_or_default();
        total[0] += text
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        for (i, key) in [
            (1, "voluntary_ctxt_switches:"),
            (2, "nonvoluntary_ctxt_switches:"),
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
    process: u64,
    /// Run-queue wait of the process's threads (ns), their voluntary and involuntary context
    /// switches.
    sched: [u64; 3],
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
                process: task_ticks(&format!("/proc/{pid}/stat"))?,
                sched: sched_counts(pid).unwrap_or_default(),
                ksoftirqd: softirqd
                    .and_then(|k| task_ticks(&format!("/proc/{k}/stat")))
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

/// What one core did over a window, as shares of the window's ticks (0 to 1).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CoreUse {
    /// The core.
    pub core: usize,
    /// Seconds between the two samples used.
    pub seconds: f64,
    /// user + nice + system + irq + softirq + steal.
    pub busy: f64,
    /// user (and nice).
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
    /// before its end. None when fewer than two samples fall inside or no tick passed.
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
        let d = b.cpu.minus(&a.cpu);
        let ticks = (d.busy() + d.idle()) as f64;
        if ticks == 0.0 {
            return None;
        }
        let share = |t: u64| t as f64 / ticks;
        let busy = share(d.busy());
        let process = share(b.process.saturating_sub(a.process));
        let ksoftirqd = share(b.ksoftirqd.saturating_sub(a.ksoftirqd));
        let per_packet = |s: f64| (packets_per_s > 0.0).then(|| s * 1e9 / packets_per_s);
        let seconds = (b.at - a.at).as_secs_f64();
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
            runqueue_wait: b.sched[0].saturating_sub(a.sched[0]) as f64 / 1e9 / seconds,
            sleeps_per_s: b.sched[1].saturating_sub(a.sched[1]) as f64 / seconds,
            preempted_per_s: b.sched[2].saturating_sub(a.sched[2]) as f64 / seconds,
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
        let sample = |ms, user, idle, softirq, process, ksoftirqd| Sample {
            at: at(ms),
            cpu: CpuTicks {
                f: [user, 0, 0, idle, 0, 0, softirq, 0],
            },
            process,
            sched: [ms * 10_000, ms * 3, ms],
            ksoftirqd,
            softnet: [ms, 0, 0],
        };
        let samples = [
            sample(0, 0, 0, 0, 0, 0),
            sample(100, 5, 5, 0, 5, 0),
            // Inside the window: 60 user, 20 softirq, 20 idle; process 50, ksoftirqd 10.
            sample(1100, 65, 25, 20, 55, 10),
            sample(1200, 100, 100, 100, 100, 100),
        ];
        let u = CoreUse::over(0, &samples, (at(50), at(1150)), 1000.0).unwrap();
        assert!((u.busy - 0.8).abs() < 1e-9 && (u.softirq - 0.2).abs() < 1e-9);
        assert!((u.process - 0.5).abs() < 1e-9 && (u.ksoftirqd - 0.1).abs() < 1e-9);
        assert!((u.other - 0.2).abs() < 1e-9);
        assert!((u.busy_ns_per_packet.unwrap() - 800_000.0).abs() < 1e-6);
        assert_eq!(u.softnet[0], 1000);
        assert!((u.runqueue_wait - 0.01).abs() < 1e-9, "{}", u.runqueue_wait);
        assert!((u.sleeps_per_s - 3000.0).abs() < 1e-6, "{}", u.sleeps_per_s);
        assert!((u.preempted_per_s - 1000.0).abs() < 1e-6);
        assert!(CoreUse::over(0, &samples, (at(150), at(1050)), 1.0).is_none());
    }
}
