//! PIDF documents (RFC 3863): validation of a published body, composition of several event
//! states of one presentity into the one document its watchers are sent (RFC 3903 §4: the
//! event state compositor), and the neutral `closed` document of a presentity without state
//! (RFC 3856 §6.6.2).
//!
//! Composition, deterministic and idempotent (composing a composed document gives it back):
//! one `<presence>` element whose attributes (namespace declarations first) are those of the
//! most recently changed state's root, with `entity` set to the presentity; its children are
//! the `<tuple>` elements of every state, in the order the states were created, then the other
//! top-level children (`dm:person`, `note`, extensions…) of the most recently changed state
//! only. A tuple from another state gets the namespace declarations of its own document's root
//! that the composed root does not make in the same way, so that every name in it keeps its
//! namespace. Elements are copied as parsed (`quick-xml` events), never spliced as strings.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::reader::NsReader;
use quick_xml::writer::Writer;

/// The PIDF namespace.
pub const NS: &[u8] = b"urn:ietf:params:xml:ns:pidf";
/// The PIDF media type.
pub const MEDIA_TYPE: &str = "application/pidf+xml";

/// Whether `content_type` is `application/pidf+xml` (parameters and case ignored).
pub fn is_pidf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(MEDIA_TYPE)
}

/// Why a body is not a usable PIDF document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a PIDF document: {0}")]
pub struct Invalid(pub String);

fn bad(why: impl Into<String>) -> Invalid {
    // It may end up in a reason phrase: one line, printable.
    let why: String = why.into();
    Invalid(
        why.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    )
}

/// One top-level child of `<presence>`: whether it is a PIDF `<tuple>`, and its events.
#[derive(Debug)]
struct Child {
    tuple: bool,
    events: Vec<Event<'static>>,
}

/// A parsed PIDF document.
#[derive(Debug)]
struct Doc {
    /// The root element (with its attributes).
    root: BytesStart<'static>,
    children: Vec<Child>,
}

impl Doc {
    /// The root's namespace declarations (`xmlns`, `xmlns:p`) with their raw values.
    fn decls(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.root
            .attributes()
            .flatten()
            .filter(|a| is_decl(a.key.as_ref()))
            .map(|a| (a.key.as_ref().to_vec(), a.value.to_vec()))
            .collect()
    }
}

fn is_decl(key: &[u8]) -> bool {
    key == b"xmlns" || key.starts_with(b"xmlns:")
}

fn check_attrs(e: &BytesStart<'_>) -> Result<(), Invalid> {
    for a in e.attributes() {
        a.map_err(|e| bad(format!("bad attribute: {e}")))?;
    }
    Ok(())
}

fn is_pidf_elem(r: &ResolveResult<'_>, local: &[u8], want: &[u8]) -> bool {
    matches!(r, ResolveResult::Bound(Namespace(ns)) if *ns == NS) && local == want
}

/// Parses `body` as a PIDF document: well-formed XML whose root is `<presence>` in the PIDF
/// namespace, with no text directly inside it.
fn parse(body: &[u8]) -> Result<Doc, Invalid> {
    let mut r = NsReader::from_reader(body);
    let mut root: Option<BytesStart<'static>> = None;
    let mut done = false;
    let mut depth = 0usize;
    let mut children: Vec<Child> = Vec::new();
    loop {
        let (res, ev) = r
            .read_resolved_event()
            .map_err(|e| bad(format!("malformed XML: {e}")))?;
        if let ResolveResult::Unknown(p) = &res {
            return Err(bad(format!(
                "unbound namespace prefix {}",
                String::from_utf8_lossy(p)
            )));
        }
        match ev {
            Event::Eof => break,
            Event::Start(ref e) | Event::Empty(ref e) if depth == 0 => {
                if root.is_some() {
                    return Err(bad("more than one root element"));
                }
                check_attrs(e)?;
                if !is_pidf_elem(&res, e.local_name().as_ref(), b"presence") {
                    return Err(bad("the root element is not a PIDF <presence>"));
                }
                root = Some(e.clone().into_owned());
                if matches!(ev, Event::Start(_)) {
                    depth = 1;
                } else {
                    done = true;
                }
            }
            Event::End(_) if depth == 1 => {
                depth = 0;
                done = true;
            }
            Event::Start(e) if depth == 1 => {
                check_attrs(&e)?;
                let tuple = is_pidf_elem(&res, e.local_name().as_ref(), b"tuple");
                children.push(Child {
                    tuple,
                    events: vec![Event::Start(e.into_owned())],
                });
                depth = 2;
            }
            Event::Empty(e) if depth == 1 => {
                check_attrs(&e)?;
                let tuple = is_pidf_elem(&res, e.local_name().as_ref(), b"tuple");
                children.push(Child {
                    tuple,
                    events: vec![Event::Empty(e.into_owned())],
                });
            }
            Event::Text(t) if depth <= 1 => {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(bad("text outside the elements of <presence>"));
                }
            }
            Event::CData(_) if depth <= 1 => {
                return Err(bad("CDATA outside the elements of <presence>"))
            }
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) if depth <= 1 => {}
            Event::DocType(_) => return Err(bad("DOCTYPE is not allowed")),
            ev => {
                if depth < 2 {
                    return Err(bad("unexpected content"));
                }
                match &ev {
                    Event::Start(e) => {
                        check_attrs(e)?;
                        depth += 1;
                    }
                    Event::Empty(e) => check_attrs(e)?,
                    Event::End(_) => depth -= 1,
                    _ => {}
                }
                children
                    .last_mut()
                    .expect("depth 2 is inside a child")
                    .events
                    .push(ev.into_owned());
            }
        }
    }
    match root {
        Some(root) if done => Ok(Doc { root, children }),
        Some(_) => Err(bad("unclosed <presence>")),
        None => Err(bad("no root element")),
    }
}

/// Checks that `body` is a PIDF document this compositor can compose (400 otherwise).
pub fn validate(body: &[u8]) -> Result<(), Invalid> {
    parse(body).map(|_| ())
}

/// One event state to compose: its body and whether it is the most recently changed.
pub struct Part<'a> {
    /// The state's PIDF document.
    pub body: &'a [u8],
    /// The most recently changed state: its root attributes and non-tuple children win.
    pub latest: bool,
}

/// Composes the PIDF documents of `parts` (in creation order) into one, for presentity
/// `entity` (when `None`, the most recent document's own `entity` attribute stays). Fails if
/// a part does not parse or none is marked latest.
pub fn compose(parts: &[Part<'_>], entity: Option<&str>) -> Result<Vec<u8>, Invalid> {
    let docs = parts
        .iter()
        .map(|p| parse(p.body).map(|d| (d, p.latest)))
        .collect::<Result<Vec<_>, _>>()?;
    let latest = docs
        .iter()
        .rposition(|(_, l)| *l)
        .ok_or_else(|| bad("no latest state"))?;
    let top = &docs[latest].0;
    let top_decls = top.decls();
    let name = String::from_utf8_lossy(top.root.name().as_ref()).into_owned();
    let mut root = BytesStart::new(name.clone());
    for a in top.root.attributes().flatten() {
        if a.key.as_ref() != b"entity" || entity.is_none() {
            root.push_attribute(a);
        }
    }
    if let Some(e) = entity {
        root.push_attribute(("entity", e));
    }
    let mut w = Writer::new(Vec::new());
    let io = |e: std::io::Error| bad(format!("write: {e}"));
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(io)?;
    w.write_event(Event::Text(BytesText::from_escaped("\n")))
        .map_err(io)?;
    w.write_event(Event::Start(root.clone())).map_err(io)?;
    let nl = || Event::Text(BytesText::from_escaped("\n"));
    w.write_event(nl()).map_err(io)?;
    // Tuple ids must be unique in a document (RFC 3863 §4.1.2): a tuple whose id an earlier
    // one took (two publishers' clients chose the same) gets `ID-2`, `ID-3`…
    let mut seen: Vec<String> = Vec::new();
    for (i, (d, _)) in docs.iter().enumerate() {
        // Declarations of this document's root that the composed root lacks or makes
        // differently go onto each of its tuples.
        let extra: Vec<(Vec<u8>, Vec<u8>)> = if i == latest {
            Vec::new()
        } else {
            d.decls()
                .into_iter()
                .filter(|x| !top_decls.contains(x))
                .collect()
        };
        for c in d.children.iter().filter(|c| c.tuple) {
            for (j, ev) in c.events.iter().enumerate() {
                let ev = if j == 0 {
                    first_of_tuple(ev, &extra, &mut seen)
                } else {
                    ev.clone()
                };
                w.write_event(ev).map_err(io)?;
            }
            w.write_event(nl()).map_err(io)?;
        }
    }
    for c in top.children.iter().filter(|c| !c.tuple) {
        for ev in &c.events {
            w.write_event(ev.clone()).map_err(io)?;
        }
        w.write_event(nl()).map_err(io)?;
    }
    w.write_event(Event::End(root.to_end().into_owned()))
        .map_err(io)?;
    Ok(w.into_inner())
}

/// `ev` (a tuple's start) with the declarations of `extra` it does not make itself, and an
/// id no earlier tuple has (`seen`, which it joins).
fn first_of_tuple(
    ev: &Event<'static>,
    extra: &[(Vec<u8>, Vec<u8>)],
    seen: &mut Vec<String>,
) -> Event<'static> {
    let (start, empty) = match ev {
        Event::Start(s) => (s, false),
        Event::Empty(s) => (s, true),
        other => return other.clone(),
    };
    let own: Vec<Vec<u8>> = start
        .attributes()
        .flatten()
        .map(|a| a.key.as_ref().to_vec())
        .collect();
    let id = attr(start, b"id").unwrap_or_default();
    let unique = if seen.contains(&id) {
        (2..)
            .map(|n| format!("{id}-{n}"))
            .find(|c| !seen.contains(c))
            .expect("a free id")
    } else {
        id.clone()
    };
    seen.push(unique.clone());
    if extra.is_empty() && unique == id {
        return ev.clone();
    }
    let mut s = start.clone();
    if unique != id {
        s.clear_attributes();
        for a in start.attributes().flatten() {
            if a.key.as_ref() == b"id" {
                s.push_attribute(("id", unique.as_str()));
            } else {
                s.push_attribute(a);
            }
        }
    }
    for (k, v) in extra.iter().filter(|(k, _)| !own.contains(k)) {
        s.push_attribute(Attribute::from((k.as_slice(), v.as_slice())));
    }
    if empty {
        Event::Empty(s)
    } else {
        Event::Start(s)
    }
}

/// The neutral document of a presentity without event state (RFC 3856 §6.6.2): one tuple,
/// status `closed`.
pub fn closed(entity: &str) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    let mut root = BytesStart::new("presence");
    root.push_attribute(("xmlns", "urn:ietf:params:xml:ns:pidf"));
    root.push_attribute(("entity", entity));
    let mut tuple = BytesStart::new("tuple");
    tuple.push_attribute(("id", "sascribe-closed"));
    let evs = [
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
        Event::Text(BytesText::from_escaped("\n")),
        Event::Start(root.clone()),
        Event::Start(tuple.clone()),
        Event::Start(BytesStart::new("status")),
        Event::Start(BytesStart::new("basic")),
        Event::Text(BytesText::new("closed")),
        Event::End(BytesStart::new("basic").to_end().into_owned()),
        Event::End(BytesStart::new("status").to_end().into_owned()),
        Event::End(tuple.to_end().into_owned()),
        Event::End(root.to_end().into_owned()),
    ];
    for ev in evs {
        w.write_event(ev).expect("writing to a Vec cannot fail");
    }
    w.into_inner()
}

/// What a PIDF document says, for tests and harnesses: its `entity` and, per `<tuple>` in
/// document order, its `id`, `<basic>` status and `<note>` texts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The `entity` attribute of `<presence>`.
    pub entity: Option<String>,
    /// The tuples, in document order.
    pub tuples: Vec<TupleSummary>,
}

/// One `<tuple>` of a [`Summary`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TupleSummary {
    /// Its `id`.
    pub id: String,
    /// The text of its `<status><basic>`.
    pub basic: Option<String>,
    /// The texts of its `<note>` elements.
    pub notes: Vec<String>,
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Parses `body` (a PIDF document, see [`validate`]) into a [`Summary`].
pub fn summary(body: &[u8]) -> Result<Summary, Invalid> {
    let doc = parse(body)?;
    let mut out = Summary {
        entity: attr(&doc.root, b"entity"),
        tuples: Vec::new(),
    };
    for c in doc.children.iter().filter(|c| c.tuple) {
        let mut t = TupleSummary::default();
        let mut inside: Option<Vec<u8>> = None;
        for ev in &c.events {
            match ev {
                Event::Start(e) | Event::Empty(e) if t.id.is_empty() && inside.is_none() => {
                    t.id = attr(e, b"id").unwrap_or_default();
                    inside = Some(Vec::new());
                }
                Event::Start(e) => inside = Some(e.local_name().as_ref().to_vec()),
                Event::Text(x) => {
                    let text = x
                        .unescape()
                        .map_err(|e| bad(format!("bad text: {e}")))?
                        .trim()
                        .to_string();
                    match inside.as_deref() {
                        Some(b"basic") => t.basic = Some(text),
                        Some(b"note") => t.notes.push(text),
                        _ => {}
                    }
                }
                Event::End(_) => inside = Some(Vec::new()),
                _ => {}
            }
        }
        out.tuples.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:alice@example.com">
  <tuple id="pc"><status><basic>open</basic></status><note>v1</note></tuple>
  <dm:person id="p1"><note>at the desk</note></dm:person>
  <note>hello from a</note>
</presence>"#;
    const B: &str = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:example:x" entity="sip:alice@example.com"><p:tuple id="phone"><p:status><p:basic>closed</p:basic></p:status><x:ext>1 &amp; 2</x:ext></p:tuple><p:note>from b</p:note></p:presence>"#;

    #[test]
    fn validates() {
        assert!(validate(A.as_bytes()).is_ok());
        assert!(validate(B.as_bytes()).is_ok());
        assert!(validate(b"<presence xmlns='urn:ietf:params:xml:ns:pidf'/>").is_ok());
        for bad in [
            "",
            "open",
            "<presence>",
            "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple></presence>",
            "<presence xmlns='urn:other'/>",
            "<presence xmlns='urn:ietf:params:xml:ns:pidf'>text</presence>",
            "<presence xmlns='urn:ietf:params:xml:ns:pidf'/><presence xmlns='urn:ietf:params:xml:ns:pidf'/>",
            "<presence xmlns='urn:ietf:params:xml:ns:pidf'><q:tuple/></presence>",
            "<presence xmlns='urn:ietf:params:xml:ns:pidf' a='1' a='2'/>",
        ] {
            assert!(validate(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn composes_tuples_of_all_and_the_rest_of_the_latest() {
        let parts = [
            Part {
                body: A.as_bytes(),
                latest: false,
            },
            Part {
                body: B.as_bytes(),
                latest: true,
            },
        ];
        let doc = compose(&parts, Some("sip:alice@example.com")).unwrap();
        let s = summary(&doc).unwrap();
        assert_eq!(s.entity.as_deref(), Some("sip:alice@example.com"));
        let ids: Vec<&str> = s.tuples.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["pc", "phone"]);
        assert_eq!(s.tuples[0].basic.as_deref(), Some("open"));
        assert_eq!(s.tuples[0].notes, ["v1"]);
        assert_eq!(s.tuples[1].basic.as_deref(), Some("closed"));
        let text = String::from_utf8(doc.clone()).unwrap();
        // B is the latest: its root (prefix p) and its note; A's person and note are gone.
        assert!(text.contains("<p:note>from b</p:note>"), "{text}");
        assert!(
            !text.contains("at the desk") && !text.contains("hello from a"),
            "{text}"
        );
        // A's tuple keeps its default namespace.
        assert!(
            text.contains(r#"<tuple id="pc" xmlns="urn:ietf:params:xml:ns:pidf""#),
            "{text}"
        );
        assert!(text.contains("1 &amp; 2"), "{text}");
        // Idempotent.
        let again = compose(
            &[Part {
                body: &doc,
                latest: true,
            }],
            Some("sip:alice@example.com"),
        )
        .unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn duplicate_tuple_ids_are_made_unique() {
        let t = |n: &str| {
            format!("<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><note>{n}</note></tuple></presence>")
        };
        let (a, b, c) = (t("a"), t("b"), t("c"));
        let parts: Vec<Part<'_>> = [&a, &b, &c]
            .iter()
            .enumerate()
            .map(|(i, x)| Part {
                body: x.as_bytes(),
                latest: i == 2,
            })
            .collect();
        let doc = compose(&parts, None).unwrap();
        let s = summary(&doc).unwrap();
        let ids: Vec<&str> = s.tuples.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["t", "t-2", "t-3"]);
        let notes: Vec<&str> = s.tuples.iter().map(|t| t.notes[0].as_str()).collect();
        assert_eq!(notes, ["a", "b", "c"]);
        let again = compose(
            &[Part {
                body: &doc,
                latest: true,
            }],
            None,
        )
        .unwrap();
        assert_eq!(again, doc);
    }

    #[test]
    fn entity_is_the_presentity() {
        let doc = compose(
            &[Part {
                body: A.as_bytes(),
                latest: true,
            }],
            Some("sip:x@example.com?a=\"b\""),
        )
        .unwrap();
        let s = summary(&doc).unwrap();
        assert_eq!(s.entity.as_deref(), Some("sip:x@example.com?a=\"b\""));
        // A's own children stay, with its prefixes.
        assert!(String::from_utf8(doc)
            .unwrap()
            .contains("<dm:person id=\"p1\">"));
    }

    #[test]
    fn closed_document() {
        let doc = closed("sip:bob@example.com");
        let s = summary(&doc).unwrap();
        assert_eq!(s.entity.as_deref(), Some("sip:bob@example.com"));
        assert_eq!(s.tuples.len(), 1);
        assert_eq!(s.tuples[0].basic.as_deref(), Some("closed"));
    }
}
