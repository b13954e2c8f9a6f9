//! The history: one JSON object a line, written by the load client (requests, responses,
//! NOTIFYs) and by the campaign (faults, heal), read back by the checker. Times are wall-clock
//! microseconds since the Unix epoch, so the two writers (separate processes on one machine)
//! merge on one time line.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One history entry. `op` ties a request to its result; `dialog` is a subscription's Call-ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A PUBLISH of version `version` of presentity `pres` was sent to `peer`.
    Publish {
        t: u64,
        op: u64,
        pres: String,
        peer: String,
        version: u64,
        if_match: Option<String>,
    },
    /// Its final response (`status` None: none within the client's give-up time).
    PublishResult {
        t: u64,
        op: u64,
        pres: String,
        version: u64,
        status: Option<u16>,
        etag: Option<String>,
    },
    /// A SUBSCRIBE (initial, refresh, or `expires` 0: unsubscribe) of `watcher` to `pres`.
    Subscribe {
        t: u64,
        op: u64,
        pres: String,
        watcher: String,
        dialog: String,
        peer: String,
        expires: u32,
        initial: bool,
    },
    /// Its final response.
    SubscribeResult {
        t: u64,
        op: u64,
        dialog: String,
        status: Option<u16>,
    },
    /// A NOTIFY received in `dialog`: its CSeq, whether it terminates the subscription, and the
    /// version in its body (None: no body, or a document without a version).
    Notify {
        t: u64,
        dialog: String,
        cseq: u32,
        terminated: bool,
        version: Option<u64>,
        seq: Option<u64>,
        /// The peer it names as the dialog's target (its `Contact`), when it names one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contact: Option<String>,
    },
    /// A fault applied by the campaign (e.g. `kill 10.77.0.3:5060`); `peer` is the SIP address
    /// of a peer it stops, restarts or kills.
    Fault {
        t: u64,
        what: String,
        peer: Option<String>,
    },
    /// Every fault is healed from here on (the cluster is whole again).
    Heal { t: u64 },
    /// The publishers stopped: no PUBLISH is sent after this.
    Quiesce { t: u64 },
}

impl Event {
    /// When it happened.
    pub fn t(&self) -> u64 {
        match self {
            Event::Publish { t, .. }
            | Event::PublishResult { t, .. }
            | Event::Subscribe { t, .. }
            | Event::SubscribeResult { t, .. }
            | Event::Notify { t, .. }
            | Event::Fault { t, .. }
            | Event::Heal { t }
            | Event::Quiesce { t } => *t,
        }
    }
}

/// Appends events to a file, one line each, flushed per line.
pub struct Writer(std::io::BufWriter<std::fs::File>);

impl Writer {
    /// Opens (creates, appends to) `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self(std::io::BufWriter::new(f)))
    }

    /// Writes one event.
    pub fn write(&mut self, e: &Event) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.0, e)?;
        self.0.write_all(b"\n")?;
        self.0.flush()?;
        Ok(())
    }
}

/// Reads the events of several files, merged in time order (stable: a file's own order is kept
/// for equal times). A line that does not parse is an error naming the file and line.
pub fn read(paths: &[&Path]) -> anyhow::Result<Vec<Event>> {
    let mut all = Vec::new();
    for p in paths {
        let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let e: Event = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a history event", p.display(), i + 1))?;
            all.push(e);
        }
    }
    all.sort_by_key(Event::t);
    Ok(all)
}

/// The version a document carries: the number after `sxv=PRES/` in its body (the load client
/// writes `<note>sxv=PRES/N</note>`). None when there is none, or it names another presentity.
pub fn version_in(body: &str, pres: &str) -> Option<u64> {
    let at = body.find("sxv=")? + 4;
    let rest = &body[at..];
    let (name, rest) = rest.split_once('/')?;
    if name != pres {
        return None;
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_note() {
        let b = "<presence><tuple id='a'/><note>sxv=p3/57</note></presence>";
        assert_eq!(version_in(b, "p3"), Some(57));
        assert_eq!(version_in(b, "p4"), None);
        assert_eq!(version_in("", "p3"), None);
    }

    #[test]
    fn events_round_trip_and_merge_by_time() {
        let dir = std::env::temp_dir().join(format!("sx-hist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        let mut w = Writer::open(&a).unwrap();
        w.write(&Event::Quiesce { t: 5 }).unwrap();
        w.write(&Event::Heal { t: 9 }).unwrap();
        let mut w = Writer::open(&b).unwrap();
        w.write(&Event::Fault {
            t: 7,
            what: "kill".into(),
            peer: None,
        })
        .unwrap();
        let all = read(&[&a, &b]).unwrap();
        assert_eq!(all.iter().map(Event::t).collect::<Vec<_>>(), [5, 7, 9]);
        std::fs::write(&b, "{\"kind\":\"nope\"}\n").unwrap();
        let err = read(&[&a, &b]).unwrap_err();
        assert!(
            format!("{err:#}").contains(":1: not a history event"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
