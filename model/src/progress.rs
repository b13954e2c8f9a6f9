//! Running the checker with progress lines and a wall-clock limit.
//!
//! Stateright's `join()` blocks silently until the search ends, and the timeout of its
//! `CheckerBuilder` is not honoured by a single-threaded BFS or DFS: the timeout thread only
//! closes the job market, and a lone worker never consults the market while it has states of its
//! own to expand (it pops jobs only when its queue is empty and splits its queue with the market
//! only when there are other threads), so it runs to the end of the search. [`watch`] instead
//! polls the checker's counters from the calling thread, prints a progress line every few seconds,
//! and gives up waiting when the deadline passes, whatever the thread count: the caller reports
//! what was found so far and exits, which ends the abandoned worker threads.

use stateright::{Checker, Model};
use std::io::Write;
use std::time::{Duration, Instant};

/// The progress interval of the command-line tool unless told otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// A checker's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// States generated, including repeats.
    pub generated: usize,
    /// Distinct states.
    pub unique: usize,
    /// Deepest path explored so far.
    pub max_depth: usize,
}

impl Counts {
    /// Reads the counters of a (possibly running) checker.
    pub fn of<M: Model, C: Checker<M> + ?Sized>(checker: &C) -> Self {
        Counts {
            generated: checker.state_count(),
            unique: checker.unique_state_count(),
            max_depth: checker.max_depth(),
        }
    }
}

/// How a watched checker run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every checker thread finished: the search ended on its own (it ran out of states within
    /// its bounds, or found what it was asked to find).
    Finished,
    /// The deadline passed first; the search was abandoned, its worker threads still running.
    TimedOut,
}

/// Writes progress lines: on demand ([`Progress::say`]) and, while a checker runs, one every
/// `every` ([`Progress::tick`]). A quiet reporter writes nothing.
pub struct Progress {
    every: Option<Duration>,
    out: Box<dyn Write + Send>,
    start: Instant,
    last: Instant,
    rate_from: Instant,
    last_generated: usize,
    context: String,
}

impl Progress {
    /// A reporter writing to `out`, a periodic line every `every` (`None`: quiet).
    pub fn new(every: Option<Duration>, out: Box<dyn Write + Send>) -> Self {
        let now = Instant::now();
        Progress {
            every,
            out,
            start: now,
            last: now,
            rate_from: now,
            last_generated: 0,
            context: String::new(),
        }
    }

    /// A reporter on standard error; `every` zero means quiet.
    pub fn stderr(every: Duration) -> Self {
        Progress::new(
            (!every.is_zero()).then_some(every),
            Box::new(std::io::stderr()),
        )
    }

    /// A reporter that writes nothing.
    pub fn quiet() -> Self {
        Progress::new(None, Box::new(std::io::sink()))
    }

    /// Whether this reporter writes anything.
    pub fn enabled(&self) -> bool {
        self.every.is_some()
    }

    /// What the periodic lines say is going on (e.g. which configuration is being searched).
    pub fn set_context(&mut self, context: impl Into<String>) {
        self.context = context.into();
    }

    /// Writes `line` now, prefixed with the elapsed time (unless quiet).
    pub fn say(&mut self, line: &str) {
        if self.enabled() {
            let secs = self.start.elapsed().as_secs();
            // Progress output is best effort: a closed stderr must not stop a check.
            let _ = writeln!(self.out, "[{secs:>4} s] {line}");
        }
    }

    /// Called often while work goes on: writes a line when one is due, with the checker's
    /// counters if there is a running checker.
    pub fn tick(&mut self, counts: Option<Counts>) {
        self.tick_at(Instant::now(), counts);
    }

    fn tick_at(&mut self, now: Instant, counts: Option<Counts>) {
        let Some(every) = self.every else {
            return;
        };
        let since = now.duration_since(self.last);
        if since < every {
            return;
        }
        let mut line = self.context.clone();
        if let Some(c) = counts {
            let generated = c.generated.saturating_sub(self.last_generated);
            let secs = now.duration_since(self.rate_from).as_secs_f64();
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&counts_line(c, generated as f64 / secs.max(1e-3)));
            self.last_generated = c.generated;
            self.rate_from = now;
        }
        if let Some(rss) = rss_bytes() {
            if !line.is_empty() {
                line.push_str(", ");
            }
            line.push_str(&format!("RSS {}", mib(rss)));
        }
        self.last = now;
        self.say(&line);
    }

    /// Restarts the rate measurement (a new checker starts counting from zero).
    pub fn new_run(&mut self) {
        self.last_generated = 0;
        self.rate_from = Instant::now();
    }

    /// How long until the next periodic line is due (`None`: quiet).
    fn until_due(&self) -> Option<Duration> {
        self.every
            .map(|every| (self.last + every).saturating_duration_since(Instant::now()))
    }
}

/// `12 states generated, 5 unique, max depth 3, 40 states/s`.
pub fn counts_line(c: Counts, per_sec: f64) -> String {
    format!(
        "{} states generated, {} unique, max depth {}, {:.0} states/s",
        c.generated, c.unique, c.max_depth, per_sec
    )
}

/// Waits for a spawned `checker` to finish, writing a progress line whenever one is due, and
/// gives up waiting at `deadline`. On [`Ending::TimedOut`] the checker's threads are left
/// running (detached): read its counters and discoveries as they stand, then exit the process.
/// A panic in a checker thread is propagated.
pub fn watch<M: Model, C: Checker<M> + ?Sized>(
    checker: &mut C,
    deadline: Option<Instant>,
    progress: &mut Progress,
) -> Ending {
    let handles = checker.handles();
    progress.new_run();
    let mut pause = Duration::from_millis(1);
    loop {
        if handles.iter().all(|h| h.is_finished()) {
            for h in handles {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            return Ending::Finished;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ending::TimedOut;
        }
        progress.tick(Some(Counts::of(checker)));
        // Short pauses at first, so that small searches are not slowed down by the polling.
        let mut sleep = pause;
        if let Some(d) = deadline {
            sleep = sleep.min(d.saturating_duration_since(now));
        }
        if let Some(due) = progress.until_due() {
            sleep = sleep.min(due);
        }
        std::thread::sleep(sleep);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// This process's resident set size (`VmRSS` in `/proc/self/status`), if the system tells.
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:")
}

/// This process's peak resident set size (`VmHWM` in `/proc/self/status`), if the system tells.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// The value of a `kB` field of a `/proc/<pid>/status` text, in bytes.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let mut words = line[field.len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(n * 1024)
}

/// A byte count in MiB, e.g. `812 MiB`.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", (bytes + (1 << 19)) >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn status_fields_are_parsed_in_bytes() {
        let status =
            "Name:\tsascribe-model\nVmHWM:\t  720840 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(12345 * 1024));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(720840 * 1024));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
        assert_eq!(parse_status_kib("VmRSS:\t12 MB\n", "VmRSS:"), None);
        assert_eq!(mib(720840 * 1024), "704 MiB");
    }

    #[test]
    fn own_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let now = rss_bytes();
            assert!(now.is_some_and(|b| b > 0));
            // The peak read after the current size (other test threads allocate meanwhile).
            assert!(peak_rss_bytes() >= now);
        }
    }

    #[test]
    fn lines_wait_for_the_interval_and_carry_the_context_and_counts() {
        let out = Shared::default();
        let mut p = Progress::new(Some(Duration::from_secs(5)), Box::new(out.clone()));
        p.set_context("mutant 2 of 3 (empty-root-silent)");
        let c = Counts {
            generated: 1000,
            unique: 400,
            max_depth: 7,
        };
        let t0 = p.last;
        p.tick_at(t0 + Duration::from_secs(4), Some(c));
        assert_eq!(out.text(), "", "a line before the interval passed");
        p.tick_at(t0 + Duration::from_secs(5), Some(c));
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(
                "] mutant 2 of 3 (empty-root-silent): 1000 states generated, 400 unique, max depth 7, \
                 200 states/s"
            ),
            "{text}"
        );
        p.tick_at(t0 + Duration::from_secs(6), Some(c));
        assert_eq!(
            out.text().lines().count(),
            1,
            "a second line within the interval"
        );
        let later = Counts {
            generated: 3000,
            ..c
        };
        p.tick_at(t0 + Duration::from_secs(10), Some(later));
        let text = out.text();
        assert!(
            text.contains("3000 states generated, 400 unique, max depth 7, 400 states/s"),
            "{text}"
        );
    }

    #[test]
    fn a_quiet_reporter_writes_nothing() {
        let out = Shared::default();
        let mut p = Progress::new(None, Box::new(out.clone()));
        p.say("stage");
        p.tick(Some(Counts::default()));
        assert_eq!(out.text(), "");
    }
}
