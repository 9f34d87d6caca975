//! How the kernel schedules worker threads (`--worker-priority`).
//!
//! A worker shares its core with whatever else the scheduler puts there: other processes, the
//! kernel's softirq threads. Under the fair scheduler a woken worker may wait for another task's
//! time slice (milliseconds) before it runs, and when the core is contended it gets only its fair
//! share of it, however much it needs: the socket then fills while the worker's own CPU time
//! shows the core half idle. A higher priority, asked for once per worker thread at start,
//! removes both; the control thread keeps normal scheduling.

use std::fmt;
use std::io;
use std::str::FromStr;

/// The scheduling a worker thread asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerPriority {
    /// The process's own scheduling, unchanged.
    #[default]
    Normal,
    /// The fair scheduler at this nice value (-20 to 19; below 0 needs CAP_SYS_NICE or
    /// RLIMIT_NICE).
    Nice(i8),
    /// SCHED_FIFO at this real-time priority (1 to 99; needs CAP_SYS_NICE or RLIMIT_RTPRIO).
    /// A woken worker runs at once and keeps the core until it sleeps; the kernel's real-time
    /// throttling (`kernel.sched_rt_runtime_us`, 95% by default) leaves the rest to others.
    Fifo(u8),
}

impl FromStr for WorkerPriority {
    type Err = String;

    /// `normal`, `nice:N` or `fifo:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected normal, nice:N (-20 to 19) or fifo:N (1 to 99)");
        match s.split_once(':') {
            None if s == "normal" => Ok(Self::Normal),
            Some(("nice", n)) => match n.parse::<i8>() {
                Ok(n) if (-20..=19).contains(&n) => Ok(Self::Nice(n)),
                _ => Err(bad()),
            },
            Some(("fifo", n)) => match n.parse::<u8>() {
                Ok(n) if (1..=99).contains(&n) => Ok(Self::Fifo(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for WorkerPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Nice(n) => write!(f, "nice:{n}"),
            Self::Fifo(n) => write!(f, "fifo:{n}"),
        }
    }
}

/// Applies `p` to the calling thread.
pub(crate) fn apply(p: WorkerPriority) -> io::Result<()> {
    let r = match p {
        WorkerPriority::Normal => return Ok(()),
        // SAFETY: setpriority has no memory arguments; who = 0 is the calling thread on Linux.
        WorkerPriority::Nice(n) => unsafe {
            libc::setpriority(libc::PRIO_PROCESS, 0, libc::c_int::from(n))
        },
        WorkerPriority::Fifo(n) => {
            let param = libc::sched_param {
                sched_priority: libc::c_int::from(n),
            };
            // SAFETY: sched_setscheduler reads one sched_param from a live reference; pid 0 is
            // the calling thread.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) }
        }
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_prints_and_refuses_the_rest() {
        for p in [
            WorkerPriority::Normal,
            WorkerPriority::Nice(-20),
            WorkerPriority::Nice(19),
            WorkerPriority::Fifo(1),
            WorkerPriority::Fifo(99),
        ] {
            assert_eq!(p.to_string().parse::<WorkerPriority>(), Ok(p));
        }
        for bad in [
            "", "fifo", "fifo:0", "fifo:100", "nice:-21", "nice:20", "rr:5", "nice:x",
        ] {
            assert!(bad.parse::<WorkerPriority>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_thread_gets_the_nice_value_it_asked_for() {
        // Raising the nice value needs no privilege; on a thread of its own so that the test
        // harness's threads keep theirs.
        std::thread::spawn(|| {
            apply(WorkerPriority::Nice(5)).unwrap();
            // SAFETY: getpriority has no memory arguments.
            let now = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(now, 5);
            apply(WorkerPriority::Normal).unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, 5);
        })
        .join()
        .unwrap();
    }
}
