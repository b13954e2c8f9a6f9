//! A small SIP user agent over UDP for load generation: raw request text, one client
//! transaction per request with RFC 3261 timer E retransmissions (T1 = 500 ms doubling up to
//! T2 = 4 s, until the caller's give-up time), and every NOTIFY answered 200 OK at once, then
//! handed to an optional sink with its arrival time.
//!
//! Shared by the benchmark (`sascribe-bench`, on 127.0.0.1) and the fault campaign
//! (`sascribe-netns`, inside a network namespace, bound to that namespace's address).

use anyhow::{anyhow, bail, Context};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// A parsed SIP message: start line, header lines in order (names as received), body.
#[derive(Clone, Debug)]
pub struct Msg {
    pub first: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The full name of a compact header form (RFC 3261 §7.3.3 and RFC 6665), lower case.
fn canonical(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "i" => "call-id",
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "l" => "content-length",
        "m" => "contact",
        "c" => "content-type",
        "o" => "event",
        _ => return n,
    }
    .to_string()
}

impl Msg {
    pub fn parse(data: &[u8]) -> Option<Msg> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text.trim_end(), ""),
        };
        let mut lines = head.split("\r\n");
        let first = lines.next()?.trim().to_string();
        if first.is_empty() {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // Folded continuation line.
                let (_, v) = headers.last_mut()?;
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        Some(Msg {
            first,
            headers,
            body: body.to_string(),
        })
    }

    /// The first value of header `name` (case-insensitive, compact forms understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = canonical(name);
        self.headers
            .iter()
            .find(|(n, _)| canonical(n) == want)
            .map(|(_, v)| v.as_str())
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.first.strip_prefix("SIP/2.0 ")?;
        rest.split_whitespace().next()?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.first.starts_with("SIP/") {
            return None;
        }
        self.first.split_whitespace().next()
    }

    /// The transaction key: Call-ID, CSeq number and CSeq method.
    pub fn key(&self) -> Option<String> {
        let call_id = self.header("Call-ID")?;
        let mut cseq = self.header("CSeq")?.split_whitespace();
        let n: u32 = cseq.next()?.parse().ok()?;
        Some(tx_key(call_id, n, cseq.next()?))
    }

    /// The 200 OK a UAS sends for this request: Via(s), From, To, Call-ID and CSeq copied.
    pub fn ok_response(&self) -> String {
        let mut r = String::from("SIP/2.0 200 OK\r\n");
        for (n, v) in &self.headers {
            if matches!(
                canonical(n).as_str(),
                "via" | "from" | "to" | "call-id" | "cseq"
            ) {
                r.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        r.push_str("Content-Length: 0\r\n\r\n");
        r
    }
}

pub fn tx_key(call_id: &str, cseq: u32, method: &str) -> String {
    format!("{call_id} {cseq} {}", method.to_ascii_uppercase())
}

/// The `tag` parameter of a From/To header value.
pub fn tag(value: &str) -> Option<&str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("tag").then_some(v.trim())
    })
}

/// A NOTIFY as the client received it.
#[derive(Clone, Debug)]
pub struct Notification {
    /// Its Call-ID (the dialog it belongs to).
    pub call_id: String,
    /// Its body.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// The whole message (CSeq, Subscription-State, …).
    pub msg: Msg,
}

struct Shared {
    socks: Vec<Arc<UdpSocket>>,
    locals: Vec<SocketAddr>,
    pending: Mutex<HashMap<String, oneshot::Sender<Msg>>>,
    counter: AtomicU64,
    retransmissions: AtomicU64,
    notifies: AtomicU64,
}

/// A socket on `ip` with 4 MB buffers (capped by net.core.rmem_max / wmem_max): a burst of
/// NOTIFYs must not be dropped by the client.
fn bind_big(ip: IpAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::new(ip, 0).into())?;
    UdpSocket::from_std(s.into())
}

struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The load client: `n` UDP sockets on 127.0.0.1, requests spread over them by the caller.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl Client {
    /// Binds `sockets` sockets on 127.0.0.1; NOTIFYs (already answered) go to `sink` if given.
    pub async fn bind(
        sockets: usize,
        sink: Option<mpsc::UnboundedSender<Notification>>,
    ) -> anyhow::Result<Self> {
        Self::bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), sockets, sink).await
    }

    /// Binds `sockets` sockets on `ip` (ephemeral ports); NOTIFYs go to `sink` if given.
    pub async fn bind_on(
        ip: IpAddr,
        sockets: usize,
        sink: Option<mpsc::UnboundedSender<Notification>>,
    ) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        let mut locals = Vec::new();
        for _ in 0..sockets.max(1) {
            let s = bind_big(ip).context("binding a client socket")?;
            locals.push(s.local_addr()?);
            socks.push(Arc::new(s));
        }
        let shared = Arc::new(Shared {
            socks,
            locals,
            pending: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(1),
            retransmissions: AtomicU64::new(0),
            notifies: AtomicU64::new(0),
        });
        let tasks = (0..shared.socks.len())
            .map(|i| tokio::spawn(receive(shared.clone(), i, sink.clone())))
            .collect();
        Ok(Self {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        })
    }

    pub fn sockets(&self) -> usize {
        self.shared.socks.len()
    }

    pub fn local(&self, sock: usize) -> SocketAddr {
        self.shared.locals[sock % self.shared.locals.len()]
    }

    /// A fresh number for Call-IDs, tags and branches.
    pub fn unique(&self) -> u64 {
        self.shared.counter.fetch_add(1, Ordering::Relaxed)
    }

    pub fn retransmissions(&self) -> u64 {
        self.shared.retransmissions.load(Ordering::Relaxed)
    }

    pub fn notifies(&self) -> u64 {
        self.shared.notifies.load(Ordering::Relaxed)
    }

    /// Sends `request` (a request without a Via line, CRLF line ends) from socket `sock` to
    /// `dest` and waits for its final response, retransmitting per timer E, at most `give_up`.
    pub async fn request(
        &self,
        sock: usize,
        dest: SocketAddr,
        request: &str,
        give_up: Duration,
    ) -> anyhow::Result<Msg> {
        let sock = sock % self.shared.socks.len();
        let (first, rest) = request
            .split_once("\r\n")
            .ok_or_else(|| anyhow!("request without a start line"))?;
        let branch = self.unique();
        let text = format!(
            "{first}\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-sb{branch}\r\n{rest}",
            self.shared.locals[sock]
        );
        let key = Msg::parse(text.as_bytes())
            .and_then(|m| m.key())
            .ok_or_else(|| anyhow!("request without Call-ID/CSeq"))?;
        let (tx, mut rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .expect("pending map")
            .insert(key.clone(), tx);
        let socket = &self.shared.socks[sock];
        let start = Instant::now();
        let mut interval = Duration::from_millis(500);
        let result = loop {
            if let Err(e) = socket.send_to(text.as_bytes(), dest).await {
                break Err(anyhow!("sending to {dest}: {e}"));
            }
            let left = give_up.saturating_sub(start.elapsed());
            if left.is_zero() {
                break Err(anyhow!("no final response within {give_up:?}"));
            }
            match tokio::time::timeout(interval.min(left), &mut rx).await {
                Ok(Ok(msg)) => break Ok(msg),
                Ok(Err(_)) => break Err(anyhow!("client closed")),
                Err(_) if start.elapsed() >= give_up => {
                    break Err(anyhow!("no final response within {give_up:?}"))
                }
                Err(_) => {
                    self.shared.retransmissions.fetch_add(1, Ordering::Relaxed);
                    interval = (interval * 2).min(Duration::from_secs(4));
                }
            }
        };
        self.shared
            .pending
            .lock()
            .expect("pending map")
            .remove(&key);
        result
    }

    /// OPTIONS until a 200 arrives (a target is up), at most `within`.
    pub async fn wait_up(&self, dest: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let n = self.unique();
            let req = format!(
                "OPTIONS sip:probe@{dest} SIP/2.0\r\nMax-Forwards: 70\r\nFrom: <sip:bench@example.test>;tag=o{n}\r\nTo: <sip:probe@{dest}>\r\nCall-ID: opt{n}-{}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                std::process::id()
            );
            match self.request(0, dest, &req, Duration::from_secs(1)).await {
                Ok(r) if r.status() == Some(200) => return Ok(()),
                _ if Instant::now() >= deadline => bail!("{dest} does not answer OPTIONS"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

async fn receive(shared: Arc<Shared>, i: usize, sink: Option<mpsc::UnboundedSender<Notification>>) {
    let sock = shared.socks[i].clone();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let at = Instant::now();
        let Some(msg) = Msg::parse(&buf[..n]) else {
            continue;
        };
        if let Some(code) = msg.status() {
            if code < 200 {
                continue;
            }
            let Some(key) = msg.key() else { continue };
            let waiter = shared.pending.lock().expect("pending map").remove(&key);
            if let Some(w) = waiter {
                let _ = w.send(msg);
            }
            continue;
        }
        if msg.method() == Some("NOTIFY") {
            let _ = sock.send_to(msg.ok_response().as_bytes(), from).await;
            shared.notifies.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = &sink {
                let _ = s.send(Notification {
                    call_id: msg.header("Call-ID").unwrap_or("").to_string(),
                    body: msg.body.clone(),
                    at,
                    msg,
                });
            }
        }
    }
}

/// Runs `f(0..n)` with at most `window` in flight and, if `per_sec` is given, starts spaced
/// evenly at that rate; stops starting new ones (and abandons those in flight) after `limit`.
/// Returns the outputs of the finished ones and whether everything finished.
pub async fn drive<T, F, Fut>(
    n: usize,
    window: usize,
    per_sec: Option<f64>,
    limit: Duration,
    f: F,
) -> (Vec<T>, bool)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let deadline = tokio::time::Instant::now() + limit;
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    let mut next = 0;
    let mut launching = true;
    while (launching && next < n) || !set.is_empty() {
        while launching && next < n && set.len() < window.max(1) {
            if let Some(r) = per_sec.filter(|r| *r > 0.0) {
                let due = start + Duration::from_secs_f64(next as f64 / r);
                if due >= deadline {
                    launching = false;
                    break;
                }
                tokio::time::sleep_until(due).await;
            }
            set.spawn(f(next));
            next += 1;
        }
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(v))) => out.push(v),
            Ok(Some(Err(_))) => {}
            Ok(None) => {}
            Err(_) => {
                set.abort_all();
                return (out, false);
            }
        }
    }
    (out, next == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:w1@127.0.0.1:5000 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
        v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2\r\n\
        To: <sip:w1@example.test>;tag=abc\r\n\
        f: <sip:alice@example.test>;tag=xyz\r\n\
        i: call-1\r\n\
        CSeq: 7 NOTIFY\r\n\
        Subscription-State: active;\r\n expires=600\r\n\
        Content-Length: 5\r\n\r\nhello";

    #[test]
    fn parses_compact_forms_folding_and_body() {
        let m = Msg::parse(NOTIFY.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("NOTIFY"));
        assert_eq!(m.status(), None);
        assert_eq!(m.header("call-id"), Some("call-1"));
        assert_eq!(m.header("From"), Some("<sip:alice@example.test>;tag=xyz"));
        assert_eq!(m.header("Subscription-State"), Some("active; expires=600"));
        assert_eq!(m.key().as_deref(), Some("call-1 7 NOTIFY"));
        assert_eq!(m.body, "hello");
    }

    #[test]
    fn the_200_for_a_notify_copies_every_via_in_order() {
        let m = Msg::parse(NOTIFY.as_bytes()).unwrap();
        let r = m.ok_response();
        let ok = Msg::parse(r.as_bytes()).unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(ok.key().as_deref(), Some("call-1 7 NOTIFY"));
        let vias: Vec<&str> = r.lines().filter(|l| l.contains("z9hG4bK")).collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].ends_with("branch=z9hG4bK1") && vias[1].ends_with("branch=z9hG4bK2"));
        assert!(r.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn responses_and_tags() {
        let m = Msg::parse(
            b"SIP/2.0 412 Conditional Request Failed\r\nCall-ID: c\r\nCSeq: 2 publish\r\nTo: <sip:a@b>;tag=t1;x=y\r\n\r\n",
        )
        .unwrap();
        assert_eq!(m.status(), Some(412));
        assert_eq!(m.method(), None);
        assert_eq!(m.key().as_deref(), Some("c 2 PUBLISH"));
        assert_eq!(tag(m.header("To").unwrap()), Some("t1"));
        assert_eq!(tag("<sip:a@b>"), None);
        assert!(Msg::parse(b"\r\n\r\n").is_none());
        assert!(Msg::parse(b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n").is_none());
    }

    #[tokio::test]
    async fn drive_respects_the_window_and_the_limit() {
        let live = Arc::new(AtomicU64::new(0));
        let peak = Arc::new(AtomicU64::new(0));
        let (l, p) = (live.clone(), peak.clone());
        let (out, done) = drive(20, 3, None, Duration::from_secs(10), move |i| {
            let (l, p) = (l.clone(), p.clone());
            async move {
                let now = l.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                l.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .await;
        assert!(done);
        assert_eq!(out.len(), 20);
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        let (out, done) = drive(5, 5, None, Duration::from_millis(50), |_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
        .await;
        assert!(!done && out.is_empty());
    }

    #[tokio::test]
    async fn a_notify_is_answered_and_a_response_completes_its_transaction() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client = Client::bind(1, Some(tx)).await.unwrap();
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest = server.local_addr().unwrap();
        let c = client.clone();
        let req = tokio::spawn(async move {
            c.request(
                0,
                dest,
                "PUBLISH sip:a@example.test SIP/2.0\r\nCall-ID: p1\r\nCSeq: 1 PUBLISH\r\nContent-Length: 0\r\n\r\n",
                Duration::from_secs(5),
            )
            .await
        });
        let mut buf = vec![0u8; 4096];
        let (n, from) = server.recv_from(&mut buf).await.unwrap();
        let got = Msg::parse(&buf[..n]).unwrap();
        assert!(got
            .header("Via")
            .unwrap()
            .contains(&client.local(0).to_string()));
        server
            .send_to(got.ok_response().as_bytes(), from)
            .await
            .unwrap();
        assert_eq!(req.await.unwrap().unwrap().status(), Some(200));
        server.send_to(NOTIFY.as_bytes(), from).await.unwrap();
        let (n, _) = server.recv_from(&mut buf).await.unwrap();
        let ok = Msg::parse(&buf[..n]).unwrap();
        assert_eq!(
            (ok.status(), ok.key().unwrap()),
            (Some(200), "call-1 7 NOTIFY".into())
        );
        let note = rx.recv().await.unwrap();
        assert_eq!(
            (note.call_id.as_str(), note.body.as_str()),
            ("call-1", "hello")
        );
        assert_eq!(client.notifies(), 1);
    }
}
