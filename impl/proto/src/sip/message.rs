//! SIP messages as the front end sees them: a thin wrapper around rsip 0.4.
//!
//! rsip tokenises and validates the start line and header section and prints messages; this
//! module keeps it behind [`Request`], [`Response`] and [`parse`] so that it can be replaced
//! without touching protocol code, and adds what rsip lacks:
//!
//! * UDP framing (RFC 3261 §18.3): the body is cut to `Content-Length`; a `Content-Length`
//!   larger than what the datagram carries is a 400; without one the body runs to the end of
//!   the datagram. rsip never sees the body (it would insist on UTF-8).
//! * Header folding and compact header names (RFC 3261 §7.3.1, §7.3.3) are normalised first.
//! * Extension methods (which rsip rejects) are carried through, so they can get a 501.
//! * When a request is malformed, the header lines that can still be read are returned with
//!   the error, so the server can answer 400 with a reason phrase naming the problem.

use super::headers::long_name;
use bytes::Bytes;
use std::fmt;

/// The methods the server distinguishes (RFC 3261 and extensions rsip knows), plus any
/// other syntactically valid method token.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Method {
    /// RFC 3903.
    Publish,
    /// RFC 6665.
    Subscribe,
    /// RFC 6665.
    Notify,
    /// RFC 3261.
    Options,
    /// RFC 3261.
    Ack,
    /// RFC 3261.
    Cancel,
    /// A method defined elsewhere (INVITE, REGISTER, MESSAGE, …), not served here (405).
    Known(String),
    /// A method this server does not know at all (501).
    Extension(String),
}

impl Method {
    fn from_token(t: &str) -> Method {
        match t {
            "PUBLISH" => Method::Publish,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "OPTIONS" => Method::Options,
            "ACK" => Method::Ack,
            "CANCEL" => Method::Cancel,
            "INVITE" | "BYE" | "REGISTER" | "MESSAGE" | "INFO" | "PRACK" | "REFER" | "UPDATE" => {
                Method::Known(t.to_string())
            }
            other => Method::Extension(other.to_string()),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Publish => "PUBLISH",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Options => "OPTIONS",
            Method::Ack => "ACK",
            Method::Cancel => "CANCEL",
            Method::Known(s) | Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields in order, names in their long form.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// Appends a header field.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }
    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of header `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// How many fields named `name` there are.
    pub fn count(&self, name: &str) -> usize {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
    /// All fields.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

/// A SIP request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Request-URI as sent.
    pub uri: String,
    /// Header fields.
    pub headers: Headers,
    /// Body (already framed by `Content-Length`).
    pub body: Bytes,
}

/// A SIP response.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields.
    pub headers: Headers,
    /// Body.
    pub body: Bytes,
}

/// A parsed datagram.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

/// Why a datagram is not a valid SIP message, with what could still be read of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParseError {
    /// The status code a request gets for this (400 or 505); 0 when it is not a request.
    pub code: u16,
    /// What is wrong (used in the reason phrase).
    pub reason: String,
    /// Header lines that could be read (to address a response).
    pub headers: Headers,
    /// Method token from the request line, if any.
    pub method: Option<Method>,
}

const MAX_REASON: usize = 80;

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Header lines after the start line, unfolded, as `(long name, value)`; lines without a
/// colon are reported by the returned error string.
fn header_lines(lines: &[&str]) -> (Headers, Option<String>) {
    let mut unfolded: Vec<String> = Vec::new();
    for l in lines {
        if l.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(l.trim());
                continue;
            }
        }
        unfolded.push((*l).to_string());
    }
    let mut hs = Headers::default();
    let mut bad = None;
    for l in &unfolded {
        match l.split_once(':') {
            Some((n, v)) if is_token(n.trim()) => {
                hs.push(long_name(n.trim()), v.trim());
            }
            _ => {
                bad.get_or_insert_with(|| format!("malformed header line \"{}\"", sanitize(l)));
            }
        }
    }
    (hs, bad)
}

/// Parses one datagram (RFC 3261 §7, framing per §18.3).
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let err = |code, reason: String, headers, method| ParseError {
        code,
        reason,
        headers,
        method,
    };
    // Tolerate leading CRLFs (keep-alives, RFC 5626 §4.4.1).
    let start = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (head, body, has_blank) = match find(bytes, b"\r\n\r\n") {
        Some(i) => (&bytes[..i], &bytes[i + 4..], true),
        None => (bytes, &[][..], false),
    };
    let head_text = String::from_utf8_lossy(head);
    let lines: Vec<&str> = head_text.split("\r\n").collect();
    let start_line = lines.first().copied().unwrap_or("");
    let (headers, bad_line) = header_lines(lines.get(1..).unwrap_or(&[]));
    let mut parts = start_line.splitn(3, ' ');
    let (a, b, c) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let is_response = a.starts_with("SIP/");
    let method = (!is_response && is_token(a)).then(|| Method::from_token(a));
    let fail = |code, reason: String| Err(err(code, reason, headers.clone(), method.clone()));
    if head.is_empty() {
        return fail(0, "empty datagram".into());
    }
    if is_response {
        if a != "SIP/2.0" || b.len() != 3 || !b.bytes().all(|d| d.is_ascii_digit()) {
            return fail(0, "bad status line".into());
        }
    } else {
        if method.is_none() {
            return fail(0, "bad request line".into());
        }
        if b.is_empty() || b.contains(char::is_whitespace) || c.is_empty() {
            return fail(400, "malformed request line".into());
        }
        if c != "SIP/2.0" {
            if c.starts_with("SIP/")
                && !c.contains(|ch: char| ch.is_whitespace() || ch.is_control())
            {
                return fail(505, "SIP version not supported".into());
            }
            return fail(400, "malformed request line".into());
        }
    }
    if std::str::from_utf8(head).is_err() {
        return fail(400, "header section is not UTF-8".into());
    }
    if let Some(bad) = bad_line {
        return fail(400, bad);
    }
    if !has_blank {
        return fail(400, "missing empty line after headers".into());
    }
    // Validate with rsip: normalised start line and headers, no body.
    let mut norm = String::with_capacity(head.len() + 64);
    if is_response {
        norm.push_str(start_line);
    } else {
        let m = match &method {
            Some(Method::Extension(_)) | None => "OPTIONS",
            Some(m) => m.as_str(),
        };
        norm.push_str(&format!("{m} {b} SIP/2.0"));
    }
    norm.push_str("\r\n");
    for (n, v) in headers.iter() {
        norm.push_str(&format!("{n}: {v}\r\n"));
    }
    norm.push_str("\r\n");
    if let Err(e) = rsip::SipMessage::try_from(norm.as_bytes()) {
        let what = match e {
            rsip::Error::TokenizeError(s) | rsip::Error::ParseError(s) => s,
            other => other.to_string(),
        };
        return fail(400, format!("malformed message: {}", sanitize(&what)));
    }
    // Framing (RFC 3261 §18.3).
    let body = match headers.get("Content-Length") {
        None => body,
        Some(v) => match super::headers::delta_seconds(v) {
            None => return fail(400, "bad Content-Length".into()),
            Some(n) if n as usize > body.len() => {
                return fail(400, "Content-Length exceeds datagram".into())
            }
            Some(n) => &body[..n as usize],
        },
    };
    let body = Bytes::copy_from_slice(body);
    if is_response {
        let code: u16 = b.parse().unwrap_or(0);
        if !(100..700).contains(&code) {
            return fail(0, "bad status code".into());
        }
        Ok(Message::Response(Response {
            code,
            reason: c.to_string(),
            headers,
            body,
        }))
    } else {
        Ok(Message::Request(Request {
            method: method.unwrap_or(Method::Options),
            uri: b.to_string(),
            headers,
            body,
        }))
    }
}

fn print(start: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    // rsip prints the head; Content-Length is computed here and the body appended as bytes.
    let mut hs: Vec<rsip::Header> = headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("Content-Length"))
        .map(|(n, v)| rsip::Header::Other(n.to_string(), v.to_string()))
        .collect();
    hs.push(rsip::Header::Other(
        "Content-Length".into(),
        body.len().to_string(),
    ));
    let head = rsip::Headers::from(hs);
    let mut out = format!("{start}\r\n{head}\r\n").into_bytes();
    out.extend_from_slice(body);
    out
}

impl Response {
    /// The datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        let status = rsip::StatusCode::Other(self.code, sanitize(&self.reason));
        print(
            format!("{} {}", rsip::Version::V2, status),
            &self.headers,
            &self.body,
        )
    }
}

impl Request {
    /// The datagram.
    pub fn to_bytes(&self) -> Vec<u8> {
        print(
            format!("{} {} {}", self.method, self.uri, rsip::Version::V2),
            &self.headers,
            &self.body,
        )
    }
}

/// Whether `uri` is a `sip:`/`sips:` URI rsip accepts (used for Contact URIs, which become
/// the Request-URI of our NOTIFYs).
pub fn valid_uri(uri: &str) -> bool {
    let lower = uri.get(..5).unwrap_or("").to_ascii_lowercase();
    // As a request line too: rsip takes some URIs alone that it refuses there (a second `@`
    // after parameters), and a NOTIFY to such a target would not parse.
    (lower.starts_with("sip:") || lower == "sips:")
        && !uri.contains(|c: char| c.is_whitespace() || c.is_control())
        && rsip::Uri::try_from(uri).is_ok()
        && rsip::SipMessage::try_from(format!("OPTIONS {uri} SIP/2.0\r\n\r\n").as_bytes()).is_ok()
}

/// The standard reason phrase of the codes this server sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        412 => "Conditional Request Failed",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "PUBLISH sip:alice@example.test SIP/2.0\r\n\
        v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
        From: <sip:alice@example.test>;tag=1\r\n\
        To: <sip:alice@example.test>\r\n\
        Call-ID: c1\r\n\
        CSeq: 1 PUBLISH\r\n\
        Event: presence\r\n\
        Subject: a\r\n  folded\r\n\
        Content-Length: 4\r\n\r\nopenXX";

    #[test]
    fn parses_frames_and_unfolds() {
        let Ok(Message::Request(r)) = parse(PUB.as_bytes()) else {
            panic!("not a request")
        };
        assert_eq!(r.method, Method::Publish);
        assert_eq!(r.uri, "sip:alice@example.test");
        assert_eq!(
            r.headers.get("via"),
            Some("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
        );
        assert_eq!(r.headers.get("Subject"), Some("a folded"));
        assert_eq!(&r.body[..], b"open");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse(
            PUB.replace("Content-Length: 4", "Content-Length: 40")
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            (e.code, e.reason.as_str()),
            (400, "Content-Length exceeds datagram")
        );
        assert!(e.headers.get("Call-ID").is_some());
        let e = parse(PUB.replace("SIP/2.0\r\nv:", "SIP/3.0\r\nv:").as_bytes()).unwrap_err();
        assert_eq!(e.code, 505);
        let e = parse(PUB.replace("Call-ID: c1", "Call-ID c1").as_bytes()).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.reason.contains("Call-ID c1"));
        let Ok(Message::Request(r)) = parse(PUB.replace("PUBLISH sip", "FROB sip").as_bytes())
        else {
            panic!("extension method must parse")
        };
        assert_eq!(r.method, Method::Extension("FROB".into()));
    }

    #[test]
    fn uri_check() {
        for (u, ok) in [
            ("sip:w@192.0.2.1:5070", true),
            ("sip:w@example.test;transport=udp", true),
            ("sips:host", true),
            ("sip:", false),
            ("sip:w@host:port", false),
            ("nonsense", false),
            // Found by the fuzzer (sip_input): rsip takes it as a URI, not in a request line.
            (
                "sip:alice@192.sip60;branch=z9hG4bK@example.te0.2.7:5070",
                false,
            ),
            ("sip:w@192.0.2.1:5070 x", false),
        ] {
            assert_eq!(valid_uri(u), ok, "{u}");
        }
    }

    #[test]
    fn responses_round_trip() {
        let mut h = Headers::default();
        h.push("Via", "SIP/2.0/UDP x;branch=z9hG4bKa");
        h.push("SIP-ETag", "00000000000000aa");
        let r = Response {
            code: 412,
            reason: "Conditional Request Failed".into(),
            headers: h,
            body: Bytes::from_static(b"\xff\x00"),
        };
        let bytes = r.to_bytes();
        let Ok(Message::Response(back)) = parse(&bytes) else {
            panic!("response did not parse")
        };
        assert_eq!(back.code, 412);
        assert_eq!(back.reason, "Conditional Request Failed");
        assert_eq!(back.headers.get("SIP-ETag"), Some("00000000000000aa"));
        assert_eq!(back.headers.get("Content-Length"), Some("2"));
        assert_eq!(&back.body[..], b"\xff\x00");
    }
}
