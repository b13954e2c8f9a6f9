//! Framing of SIP messages on a stream (RFC 3261 §18.3, §7.5; RFC 5626 §3.5.1).
//!
//! Over TCP a message ends where its header section's empty line plus `Content-Length` bytes
//! say, so `Content-Length` is mandatory (§20.14). Between messages a user agent may send
//! CRLFs: a double CRLF is a keep-alive *ping* (RFC 5626 §3.5.1), answered with one CRLF (the
//! *pong*); a lone CRLF (a pong, or padding, §7.5) is skipped.
//!
//! [`next_frame`] is a pure function over the bytes buffered for one connection: it says
//! whether a whole frame is there, how long it is, or why the stream cannot be framed. Limits
//! bound what a connection may make the endpoint buffer: the header section must end within
//! [`Limits::max_header`] bytes, and a message may not declare more than
//! [`Limits::max_message`] bytes in all.

/// What a connection may make the endpoint buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest header section, start line and empty line included (bytes).
    pub max_header: usize,
    /// Longest message, header section and body (bytes).
    pub max_message: usize,
}

/// One unit cut from the front of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A double CRLF keep-alive (4 bytes): answer with a single CRLF.
    Ping,
    /// A lone CRLF (2 bytes): skip it.
    Pad,
    /// A whole message of this many bytes.
    Message(usize),
}

impl Frame {
    /// How many bytes of the buffer the frame takes.
    pub fn len(self) -> usize {
        match self {
            Frame::Ping => 4,
            Frame::Pad => 2,
            Frame::Message(n) => n,
        }
    }

    /// Whether the frame is empty (never: every frame takes bytes).
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// Why a stream cannot be framed. Each closes the connection; the endpoint first answers a
/// request whose header fields can still be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The first line is neither a SIP/2.0 request line nor a status line.
    BadStartLine,
    /// No empty line within [`Limits::max_header`] bytes (answered 513).
    HeaderTooLarge,
    /// The header section has no `Content-Length` (answered 400).
    MissingContentLength,
    /// `Content-Length` is not a number, or given twice with different values (answered 400).
    BadContentLength,
    /// The message would exceed [`Limits::max_message`] (answered 513); `head` is the length
    /// of its header section, empty line included.
    TooLarge {
        /// Header section length.
        head: usize,
    },
}

impl FrameError {
    /// The status code a request gets for it, and the reason phrase.
    pub fn answer(self) -> (u16, &'static str) {
        match self {
            FrameError::BadStartLine => (400, "Bad Request - malformed start line"),
            FrameError::HeaderTooLarge => (513, "Message Too Large - header section"),
            FrameError::MissingContentLength => (400, "Bad Request - missing Content-Length"),
            FrameError::BadContentLength => (400, "Bad Request - bad Content-Length"),
            FrameError::TooLarge { .. } => (513, "Message Too Large"),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `line` is shaped like a SIP/2.0 start line (`SIP/2.0 code reason`, or
/// `METHOD uri SIP/2.0`; another version is left for the parser to answer with 505).
fn sip_start_line(line: &[u8]) -> bool {
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        return rest.len() >= 3 && rest.as_bytes()[..3].iter().all(u8::is_ascii_digit);
    }
    let mut parts = line.split(' ');
    let (m, uri, v) = (parts.next(), parts.next(), parts.next());
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    };
    parts.next().is_none()
        && m.is_some_and(token)
        && uri.is_some_and(|u| !u.is_empty())
        && v.is_some_and(|v| v.starts_with("SIP/") && v.len() > 4)
}

/// The `Content-Length` of a header section (start line first, no empty line).
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            continue; // a folded continuation
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue; // the parser answers malformed lines
        };
        let name = String::from_utf8_lossy(&line[..colon]);
        let name = name.trim();
        if !(name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")) {
            continue;
        }
        let value = String::from_utf8_lossy(&line[colon + 1..]);
        let value = value.trim();
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FrameError::BadContentLength);
        }
        let n: usize = value.parse().map_err(|_| FrameError::BadContentLength)?;
        if found.is_some_and(|f| f != n) {
            return Err(FrameError::BadContentLength);
        }
        found = Some(n);
    }
    found.ok_or(FrameError::MissingContentLength)
}

/// The next frame at the front of `buf`: `Ok(None)` when more bytes are needed. (Scans
/// `buf` from its start: a connection keeps a [`Framer`] instead.)
pub fn next_frame(buf: &[u8], lim: &Limits) -> Result<Option<Frame>, FrameError> {
    Framer::default().next(buf, lim)
}

/// Whether `b` may appear in the first word of a start line (a method token, or `SIP/2.0`).
fn first_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~/".contains(&b)
}

/// The framing state of one stream between reads, so that each byte is scanned once however
/// the stream is split: how far the message at the front of the buffer was scanned, whether
/// its first line is done, and its length once its header section is in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Framer {
    scanned: usize,
    word_done: bool,
    line_done: bool,
    total: Option<usize>,
}

impl Framer {
    /// The next frame at the front of `buf`, which starts where the last frame ended (or
    /// where the stream began) and has grown since the last call: `Ok(None)` when more bytes
    /// are needed. Garbage is refused as soon as its first bytes show it cannot start a
    /// SIP/2.0 start line.
    pub fn next(&mut self, buf: &[u8], lim: &Limits) -> Result<Option<Frame>, FrameError> {
        if let Some(total) = self.total {
            if buf.len() < total {
                return Ok(None);
            }
            *self = Framer::default();
            return Ok(Some(Frame::Message(total)));
        }
        if self.scanned == 0 {
            if buf.starts_with(b"\r\n\r\n") {
                return Ok(Some(Frame::Ping));
            }
            if buf.starts_with(b"\r\n") {
                // Wait for what follows a CRLF: it may be the first half of a ping.
                return match buf.get(2) {
                    None | Some(b'\r') if buf.len() < 4 => Ok(None),
                    _ => Ok(Some(Frame::Pad)),
                };
            }
            if buf == b"\r" {
                return Ok(None);
            }
        }
        let window = &buf[..buf.len().min(lim.max_header)];
        let from = self.scanned.min(window.len());
        if !self.line_done {
            for (i, &b) in window.iter().enumerate().skip(from) {
                if b == b'\n' {
                    let ok = i > 0 && window[i - 1] == b'\r' && sip_start_line(&window[..i - 1]);
                    if !ok {
                        return Err(FrameError::BadStartLine);
                    }
                    self.line_done = true;
                    break;
                }
                if !self.word_done {
                    if b == b' ' {
                        self.word_done = true;
                    } else if !first_word_byte(b) {
                        return Err(FrameError::BadStartLine);
                    }
                }
            }
        }
        let start = from.saturating_sub(3);
        let Some(end) = find(&window[start..], b"\r\n\r\n").map(|e| start + e) else {
            if buf.len() >= lim.max_header {
                return Err(FrameError::HeaderTooLarge);
            }
            self.scanned = window.len();
            return Ok(None);
        };
        let head = end + 4;
        let total = head.saturating_add(content_length(&buf[..end])?);
        if total > lim.max_message {
            return Err(FrameError::TooLarge { head });
        }
        if buf.len() >= total {
            *self = Framer::default();
            return Ok(Some(Frame::Message(total)));
        }
        self.total = Some(total);
        Ok(None)
    }
}

/// How much of the front of `buf` can be read as a header section to address a response to
/// a stream that failed to frame: up to the empty line, or else the last whole line.
pub fn readable_head(buf: &[u8], lim: &Limits) -> usize {
    let window = &buf[..buf.len().min(lim.max_header)];
    match find(window, b"\r\n\r\n") {
        Some(end) => end + 4,
        None => window
            .windows(2)
            .rposition(|w| w == b"\r\n")
            .map_or(0, |i| i + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_header: 256,
        max_message: 300,
    };

    fn msg(body: &str) -> Vec<u8> {
        format!(
            "PUBLISH sip:a@x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
             l: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Frames everything in `buf`, as the endpoint does with what a connection delivered.
    fn frames(buf: &[u8]) -> (Vec<Frame>, usize, Option<FrameError>) {
        frames_with(&mut Framer::default(), buf)
    }

    fn frames_with(fr: &mut Framer, buf: &[u8]) -> (Vec<Frame>, usize, Option<FrameError>) {
        let (mut out, mut off) = (Vec::new(), 0);
        loop {
            match fr.next(&buf[off..], &LIM) {
                Ok(Some(f)) => {
                    off += f.len();
                    out.push(f);
                }
                Ok(None) => return (out, off, None),
                Err(e) => return (out, off, Some(e)),
            }
        }
    }

    #[test]
    fn every_split_of_two_messages_frames_the_same() {
        let mut all = msg("open");
        all.extend_from_slice(b"\r\n\r\n");
        all.extend(msg(""));
        let whole = frames(&all);
        assert_eq!(whole.0.len(), 3);
        assert_eq!(whole.1, all.len());
        // Feed it in two reads split at every byte, as a driver may, the framer kept between.
        for cut in 0..=all.len() {
            let mut fr = Framer::default();
            let (first, off, err) = frames_with(&mut fr, &all[..cut]);
            assert_eq!(err, None, "cut {cut}");
            let mut buf = all[off..cut].to_vec();
            buf.extend_from_slice(&all[cut..]);
            let (rest, used, err) = frames_with(&mut fr, &buf);
            assert_eq!(err, None, "cut {cut}");
            assert_eq!(used, buf.len(), "cut {cut}");
            let got: Vec<Frame> = first.into_iter().chain(rest).collect();
            assert_eq!(got, whole.0, "cut {cut}");
        }
        // And one byte at a time.
        let (mut fr, mut buf, mut got) = (Framer::default(), Vec::new(), Vec::new());
        for &b in &all {
            buf.push(b);
            let (f, used, err) = frames_with(&mut fr, &buf);
            assert_eq!(err, None);
            buf.drain(..used);
            got.extend(f);
        }
        assert_eq!(got, whole.0);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_framer_resumes_where_it_stopped() {
        // A header section and a body arriving a byte at a time: the framer resumes where it
        // stopped (a rescan from the start would make this quadratic).
        let lim = Limits {
            max_header: 1 << 20,
            max_message: 1 << 22,
        };
        let mut m = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
        for _ in 0..20_000 {
            m.extend_from_slice(b"X: y\r\n");
        }
        m.extend_from_slice(b"l: 200000\r\n\r\n");
        m.resize(m.len() + 200_000, b'z');
        let mut fr = Framer::default();
        for n in 1..m.len() {
            assert_eq!(fr.next(&m[..n], &lim), Ok(None));
        }
        assert_eq!(fr.next(&m, &lim), Ok(Some(Frame::Message(m.len()))));
        assert_eq!(fr, Framer::default());
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut all = Vec::new();
        for b in ["a", "bb", ""] {
            all.extend(msg(b));
        }
        let (f, used, err) = frames(&all);
        assert_eq!(err, None);
        assert_eq!(used, all.len());
        assert_eq!(
            f,
            vec![
                Frame::Message(msg("a").len()),
                Frame::Message(msg("bb").len()),
                Frame::Message(msg("").len())
            ]
        );
    }

    #[test]
    fn keep_alives_are_pings_and_pads() {
        assert_eq!(next_frame(b"\r\n\r\n", &LIM), Ok(Some(Frame::Ping)));
        assert_eq!(next_frame(b"\r\n", &LIM), Ok(None));
        assert_eq!(next_frame(b"\r\n\r", &LIM), Ok(None));
        assert_eq!(next_frame(b"\r", &LIM), Ok(None));
        let mut b = b"\r\n".to_vec();
        b.extend(msg("x"));
        assert_eq!(next_frame(&b, &LIM), Ok(Some(Frame::Pad)));
        let (f, used, err) = frames(&b);
        assert_eq!((used, err), (b.len(), None));
        assert_eq!(f, vec![Frame::Pad, Frame::Message(msg("x").len())]);
    }

    #[test]
    fn content_length_is_mandatory_and_checked() {
        let no_cl = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(
            next_frame(no_cl, &LIM),
            Err(FrameError::MissingContentLength)
        );
        let bad = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(next_frame(bad, &LIM), Err(FrameError::BadContentLength));
        let twice = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert_eq!(next_frame(twice, &LIM), Err(FrameError::BadContentLength));
        let same = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 1\r\nl: 1\r\n\r\na";
        assert_eq!(next_frame(same, &LIM), Ok(Some(Frame::Message(same.len()))));
        // A body line that looks like a header does not count.
        let body = b"OPTIONS sip:x SIP/2.0\r\nl: 19\r\n\r\nContent-Length: 999";
        assert_eq!(next_frame(body, &LIM), Ok(Some(Frame::Message(body.len()))));
    }

    #[test]
    fn limits_bound_what_is_buffered() {
        // A header section that never ends.
        let mut long = b"OPTIONS sip:x SIP/2.0\r\n".to_vec();
        while long.len() < LIM.max_header {
            assert_eq!(next_frame(&long, &LIM), Ok(None), "{}", long.len());
            long.extend_from_slice(b"X-Pad: aaaa\r\n");
        }
        assert_eq!(next_frame(&long, &LIM), Err(FrameError::HeaderTooLarge));
        let cut = readable_head(&long, &LIM);
        assert!(cut <= LIM.max_header && long[..cut].ends_with(b"\r\n"));
        // A body longer than the limit is refused as soon as the header section is in.
        let big = b"OPTIONS sip:x SIP/2.0\r\nl: 280\r\n\r\n";
        assert_eq!(
            next_frame(big, &LIM),
            Err(FrameError::TooLarge { head: big.len() })
        );
        assert_eq!(readable_head(big, &LIM), big.len());
        let huge = b"OPTIONS sip:x SIP/2.0\r\nl: 9999999999\r\n\r\n";
        assert!(matches!(
            next_frame(huge, &LIM),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_refused_at_its_first_line() {
        for g in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            b"hello\r\n",
            b"\x16\x03\x01\x02\x00\x01\r\n",
            b"SIP/2.0 abc\r\n",
            b"\nOPTIONS sip:x SIP/2.0\r\n",
            // Refused before the first line is complete:
            b"\x00\x01\x02",
            b"<html>",
            b"OPTIONS sip:x SIP/2.0\nVia: SIP/2.0/TCP h\n",
        ] {
            assert_eq!(next_frame(g, &LIM), Err(FrameError::BadStartLine), "{g:?}");
        }
        for partial in [
            &b"OPTI"[..],
            b"OPTIONS sip:x SIP/2",
            b"SIP/2.0 2",
            b"SIP/2.",
        ] {
            assert_eq!(next_frame(partial, &LIM), Ok(None), "{partial:?}");
        }
        // Another SIP version frames (the parser answers 505).
        let v3 = b"OPTIONS sip:x SIP/3.0\r\nl: 0\r\n\r\n";
        assert_eq!(next_frame(v3, &LIM), Ok(Some(Frame::Message(v3.len()))));
        assert_eq!(next_frame(b"SIP/2.0 200 OK\r\n", &LIM), Ok(None));
    }
}
