//! The standard Prometheus process metrics, read from /proc/self at each scrape.
//!
//! Names and meanings follow the Prometheus client libraries ("Process metrics" in the
//! instrumentation guide, and `process_collector` of client_golang / client_python), so that
//! existing dashboards and alerts for them work unchanged.

use std::fmt::Write;

/// What one scrape found; a field is `None` when its file could not be read or parsed (the
/// metric is then left out rather than reported as 0).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Process {
    /// User and system CPU time, in seconds.
    pub(super) cpu_seconds: Option<f64>,
    /// Start time since the Unix epoch, in seconds.
    pub(super) start_time_seconds: Option<f64>,
    /// Virtual memory size, in bytes.
    pub(super) virtual_bytes: Option<u64>,
    /// Resident set size, in bytes.
    pub(super) resident_bytes: Option<u64>,
    /// Open file descriptors.
    pub(super) open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub(super) max_fds: Option<u64>,
    /// Threads.
    pub(super) threads: Option<u64>,
}

/// Reads /proc/self and writes the metrics it could read.
pub(super) fn render(out: &mut String) {
    write(out, &read());
}

/// Reads /proc/self (and the boot time from /proc/stat).
pub(super) fn read() -> Process {
    let text = |path: &str| std::fs::read_to_string(path).ok();
    let ticks = std::fs::read("/proc/self/auxv")
        .ok()
        .and_then(|a| clock_ticks(&a))
        .unwrap_or(USER_HZ);
    let stat = text("/proc/self/stat").and_then(|s| parse_stat(&s));
    let status = text("/proc/self/status").map(|s| parse_status(&s));
    let boot = text("/proc/stat").and_then(|s| parse_boot_time(&s));
    Process {
        cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / ticks as f64),
        start_time_seconds: stat
            .zip(boot)
            .map(|(s, boot)| boot as f64 + s.starttime as f64 / ticks as f64),
        virtual_bytes: status.and_then(|s| s.vm_size_kb).map(|kb| kb * 1024),
        resident_bytes: status.and_then(|s| s.vm_rss_kb).map(|kb| kb * 1024),
        // The directory handle read_dir holds is one of the entries, as in client_golang.
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64),
        max_fds: text("/proc/self/limits").and_then(|s| parse_max_open_files(&s)),
        threads: status.and_then(|s| s.threads),
    }
}

/// Writes the metrics of `p` in the text exposition format.
pub(super) fn write(out: &mut String, p: &Process) {
    fn one(out: &mut String, name: &str, kind: &str, help: &str, value: Option<String>) {
        if let Some(v) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
    let f = |v: Option<f64>| v.map(|v| v.to_string());
    let n = |v: Option<u64>| v.map(|v| v.to_string());
    one(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        f(p.cpu_seconds),
    );
    one(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        f(p.start_time_seconds),
    );
    one(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        n(p.virtual_bytes),
    );
    one(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        n(p.resident_bytes),
    );
    one(
        out,
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        n(p.open_fds),
    );
    one(
        out,
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        n(p.max_fds),
    );
    one(
        out,
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        n(p.threads),
    );
}

/// The fields of /proc/self/stat the metrics use, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    starttime: u64,
}

/// Parses /proc/[pid]/stat (proc(5)). The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// The lines of /proc/self/status the metrics use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Status {
    vm_size_kb: Option<u64>,
    vm_rss_kb: Option<u64>,
    threads: Option<u64>,
}

/// Parses `VmSize:`, `VmRSS:` (in kB) and `Threads:` of /proc/[pid]/status.
fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let number = value.split_whitespace().next().and_then(|v| v.parse().ok());
        match key {
            "VmSize" => s.vm_size_kb = number,
            "VmRSS" => s.vm_rss_kb = number,
            "Threads" => s.threads = number,
            _ => {}
        }
    }
    s
}

/// The soft limit of `Max open files` in /proc/[pid]/limits; `None` when unlimited.
fn parse_max_open_files(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) in /proc/stat.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The clock ticks per second the kernel uses in /proc (`AT_CLKTCK` of the auxiliary vector,
/// what `sysconf(_SC_CLK_TCK)` returns), from /proc/self/auxv: pairs of native words.
fn clock_ticks(auxv: &[u8]) -> Option<u64> {
    const WORD: usize = size_of::<usize>();
    auxv.chunks_exact(2 * WORD).find_map(|pair| {
        let word = |b: &[u8]| usize::from_ne_bytes(b.try_into().expect("WORD bytes")) as u64;
        (word(&pair[..WORD]) == AT_CLKTCK).then(|| word(&pair[WORD..]))
    })
}

/// `AT_CLKTCK` in <linux/auxvec.h>.
const AT_CLKTCK: u64 = 17;

/// USER_HZ, the tick rate of /proc on every architecture Linux runs the relay on; used when the
/// auxiliary vector cannot be read.
const USER_HZ: u64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_counted_after_the_name() {
        // A real line from a process named "a) b (c", spaces and parentheses included.
        let line = "23924 (a) b (c) R 23922 23922 13918 0 -1 4194304 101 0 0 0 7 3 0 0 20 0 1 0 \
                    73279 3133440 389 18446744073709551615 94264384339968 94264384359849 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 7,
                stime: 3,
                starttime: 73279
            })
        );
        assert_eq!(parse_stat("1 (x) R 2 3"), None);
        assert_eq!(parse_stat("no name"), None);
    }

    #[test]
    fn status_limits_and_boot_time() {
        let status = "Name:\trelay\nVmSize:\t    3892 kB\nVmRSS:\t    2012 kB\nThreads:\t5\n";
        assert_eq!(
            parse_status(status),
            Status {
                vm_size_kb: Some(3892),
                vm_rss_kb: Some(2012),
                threads: Some(5)
            }
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1796526177\n"),
            Some(1_796_526_177)
        );
    }

    #[test]
    fn clock_ticks_from_the_auxiliary_vector() {
        let mut auxv = Vec::new();
        for (k, v) in [(6usize, 4096usize), (17, 250), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(clock_ticks(&auxv), Some(250));
        assert_eq!(clock_ticks(&auxv[..2 * size_of::<usize>()]), None);
    }

    #[test]
    fn reads_this_process() {
        let p = read();
        // This test runs on a thread of its own beside the harness's.
        assert!(p.threads.is_some_and(|t| t >= 2), "{p:?}");
        assert!(p.resident_bytes.is_some_and(|b| b > 0), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds >= p.open_fds, "{p:?}");
        assert!(p.cpu_seconds.is_some_and(|s| s >= 0.0), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Started within the last day, not in the future (boot time is rounded to a second).
        let start = p.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn leaves_out_what_it_could_not_read() {
        let mut out = String::new();
        write(
            &mut out,
            &Process {
                threads: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(
            out,
            "# HELP process_threads Number of OS threads in the process.\n\
             # TYPE process_threads gauge\nprocess_threads 3\n"
        );
    }
}
