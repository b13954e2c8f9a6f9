//! Network impairment for fault campaigns: delay, jitter and duplication of the datagrams a
//! peer sends, and the reordering they cause. `tc netem` does that in the kernel; where the
//! kernel lacks `sch_netem` (the CI machine), the netns campaign (`tests/netns/`) starts its
//! peers with `sascribe peer --impair SPEC` and switches the impairment on with `SIGUSR1` and
//! off with `SIGUSR2`.
//!
//! [`Impaired`] wraps a [`Transport`]: while its [`Impairment`] is on, every datagram sent is
//! held for `delay + uniform(0..=jitter)` ms, and with probability `dup` % sent a second time
//! after a delay of its own. Two datagrams to one destination thus overtake each other whenever
//! their delays differ by more than the time between them. Receiving is untouched: impair every
//! peer to impair every path. At most [`MAX_HELD`] datagrams are held at once; beyond that a
//! datagram is dropped (counted as a loss, as a full netem queue would).

use super::Transport;
use crate::rng::SplitMix64;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Datagrams held at once, at most.
pub const MAX_HELD: usize = 100_000;

/// What an impairment does while it is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairSpec {
    /// Fixed delay of every datagram (ms).
    pub delay_ms: u64,
    /// Extra delay, uniform in `0..=jitter_ms` (ms).
    pub jitter_ms: u64,
    /// Probability that a datagram is sent twice (percent, 0–100).
    pub dup_pct: u8,
}

/// Largest delay or jitter accepted (ms): a minute, far beyond any failure timeout.
const MAX_DELAY_MS: u64 = 60_000;

impl FromStr for ImpairSpec {
    type Err = String;

    /// `delay=MS,jitter=MS,dup=PCT`, each key optional (0 by default), none repeated.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = ImpairSpec::default();
        let mut seen = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not KEY=VALUE (delay=MS,jitter=MS,dup=PCT)"))?;
            let k = k.trim();
            if seen.contains(&k) {
                return Err(format!("{k} given twice"));
            }
            seen.push(k);
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{k}={v:?}: not a whole number"))?;
            match k {
                "delay" | "jitter" if n > MAX_DELAY_MS => {
                    return Err(format!("{k}={n}: at most {MAX_DELAY_MS} ms"))
                }
                "delay" => spec.delay_ms = n,
                "jitter" => spec.jitter_ms = n,
                "dup" if n > 100 => return Err(format!("dup={n}: a percentage, 0 to 100")),
                "dup" => spec.dup_pct = n as u8,
                _ => return Err(format!("unknown key {k:?} (delay, jitter, dup)")),
            }
        }
        Ok(spec)
    }
}

impl std::fmt::Display for ImpairSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delay={},jitter={},dup={}",
            self.delay_ms, self.jitter_ms, self.dup_pct
        )
    }
}

/// An impairment shared by a peer's transports, switched on and off at run time.
#[derive(Debug)]
pub struct Impairment {
    spec: ImpairSpec,
    on: AtomicBool,
    held: AtomicUsize,
    rng: Mutex<SplitMix64>,
    /// The counters of [`ImpairCounts`].
    delayed: AtomicU64,
    duplicated: AtomicU64,
    dropped: AtomicU64,
}

/// Counters of an [`Impairment`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairCounts {
    /// Datagram copies held before sending.
    pub delayed: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
    /// Copies dropped because [`MAX_HELD`] were held already.
    pub dropped: u64,
}

impl Impairment {
    /// An impairment doing `spec` once switched on (it starts off); `seed` draws its delays.
    pub fn new(spec: ImpairSpec, seed: u64) -> Arc<Self> {
        Arc::new(Impairment {
            spec,
            on: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            rng: Mutex::new(SplitMix64::new(seed)),
            delayed: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Switches it on or off (datagrams already held still go out when due).
    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Whether it is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// What it does while on.
    pub fn spec(&self) -> ImpairSpec {
        self.spec
    }

    /// Its counters so far.
    pub fn counts(&self) -> ImpairCounts {
        ImpairCounts {
            delayed: self.delayed.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// The delays of one datagram's copies (ms): one, or two when it is duplicated.
    fn draw(&self) -> ([u64; 2], usize) {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let mut one = || self.spec.delay_ms + rng.next_u64() % (self.spec.jitter_ms + 1);
        let a = one();
        let b = one();
        let dup = (rng.next_u64() % 100) < u64::from(self.spec.dup_pct);
        ([a, b], 1 + usize::from(dup))
    }

    /// Takes a slot for one held datagram, if one is free.
    fn hold(&self) -> bool {
        let prev = self.held.fetch_add(1, Ordering::Relaxed);
        if prev >= MAX_HELD {
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// A transport whose sends go through an [`Impairment`].
#[derive(Debug)]
pub struct Impaired<T> {
    inner: Arc<T>,
    imp: Arc<Impairment>,
}

impl<T> Impaired<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, imp: Arc<Impairment>) -> Self {
        Impaired {
            inner: Arc::new(inner),
            imp,
        }
    }
}

impl<T: Transport> Transport for Impaired<T> {
    async fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
        if !self.imp.is_on() {
            return self.inner.send_to(buf, dst).await;
        }
        let (delays, copies) = self.imp.draw();
        if copies == 2 {
            self.imp.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        for &ms in &delays[..copies] {
            if ms == 0 {
                self.inner.send_to(buf, dst).await?;
                continue;
            }
            if !self.imp.hold() {
                continue;
            }
            self.imp.delayed.fetch_add(1, Ordering::Relaxed);
            let (inner, imp, data) = (self.inner.clone(), self.imp.clone(), buf.to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = inner.send_to(&data, dst).await;
                imp.held.fetch_sub(1, Ordering::Relaxed);
            });
        }
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.try_recv_from(buf)
    }
}

/// Switches `imp` on at each `SIGUSR1` and off at each `SIGUSR2`, for as long as the process
/// runs (a task of its own). The handlers are installed before this returns.
#[cfg(unix)]
pub fn switch_on_signals(imp: Arc<Impairment>) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut on = signal(SignalKind::user_defined1())?;
    let mut off = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        loop {
            let state = tokio::select! {
                r = on.recv() => r.map(|()| true),
                r = off.recv() => r.map(|()| false),
            };
            let Some(state) = state else { return };
            imp.set(state);
            tracing::warn!(spec = %imp.spec(), on = state, counts = ?imp.counts(), "network impairment switched");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UdpSocket;

    #[test]
    fn spec_parses_and_refuses_what_it_should() {
        let s: ImpairSpec = "delay=20, jitter=180,dup=5".parse().unwrap();
        assert_eq!(
            s,
            ImpairSpec {
                delay_ms: 20,
                jitter_ms: 180,
                dup_pct: 5
            }
        );
        assert_eq!(s.to_string().parse::<ImpairSpec>().unwrap(), s);
        assert_eq!("".parse::<ImpairSpec>().unwrap(), ImpairSpec::default());
        for bad in [
            "delay",
            "delay=x",
            "dup=101",
            "jitter=60001",
            "loss=5",
            "delay=1,delay=2",
            "delay=-1",
        ] {
            assert!(bad.parse::<ImpairSpec>().is_err(), "{bad} accepted");
        }
    }

    async fn recv(b: &UdpSocket, buf: &mut [u8; 16]) {
        tokio::time::timeout(Duration::from_secs(5), b.recv_from(buf))
            .await
            .expect("a datagram within 5 s")
            .unwrap();
    }

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    /// Off, datagrams go straight through in order; on, every one is held at least `delay`,
    /// duplicates arrive twice, and with jitter far above the spacing the order changes.
    #[tokio::test]
    async fn delays_duplicates_and_reorders_only_while_on() {
        let (a, b) = pair().await;
        let dst = b.local_addr().unwrap();
        let spec = ImpairSpec {
            delay_ms: 30,
            jitter_ms: 200,
            dup_pct: 50,
        };
        let imp = Impairment::new(spec, 7);
        let t = Impaired::new(a, imp.clone());
        let mut buf = [0u8; 16];
        for i in 0u8..5 {
            t.send_to(&[i], dst).await.unwrap();
        }
        for i in 0u8..5 {
            recv(&b, &mut buf).await;
            assert_eq!(buf[0], i, "off: in order");
        }
        assert_eq!(imp.counts(), ImpairCounts::default());

        imp.set(true);
        let start = std::time::Instant::now();
        const N: u8 = 40;
        for i in 0..N {
            t.send_to(&[i], dst).await.unwrap();
        }
        let c = imp.counts();
        assert!(c.duplicated > 0 && c.duplicated < u64::from(N), "{c:?}");
        let total = u64::from(N) + c.duplicated;
        let mut got = Vec::new();
        for _ in 0..total {
            recv(&b, &mut buf).await;
            got.push(buf[0]);
        }
        assert!(start.elapsed() >= Duration::from_millis(30));
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_ne!(got, sorted, "no reordering in {got:?}");
        sorted.dedup();
        assert_eq!(sorted, (0..N).collect::<Vec<_>>(), "every datagram arrives");
        assert_eq!(c.delayed, total);
        assert!(
            tokio::time::timeout(Duration::from_millis(400), b.recv_from(&mut buf))
                .await
                .is_err(),
            "nothing beyond the duplicates"
        );

        imp.set(false);
        t.send_to(&[99], dst).await.unwrap();
        recv(&b, &mut buf).await;
        assert_eq!(buf[0], 99);
        assert_eq!(imp.counts().delayed, total, "off again: not held");
    }
}
