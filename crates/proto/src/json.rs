//! JSON as JavaScript peers write it.
//!
//! Two things differ from what `serde_json` accepts on its own:
//!
//! - **Lone surrogates.** A JavaScript string may hold half of a surrogate pair
//!   (`"😀".slice(0, 1)`), which `JSON.stringify` writes as the escape `"\ud83d"`. Rust
//!   strings cannot hold it, so [`from_str`] maps each lone surrogate U+D800..U+DFFF to
//!   the private-use code point U+10F800..U+10FFFF (the last 2 048 of plane 16), and
//!   [`write_value`] writes those code points back as the same escapes: the string
//!   round-trips to a JavaScript peer unchanged. A Rust handler sees the private-use
//!   character; a peer that sends one of those 2 048 code points itself gets it back as
//!   a lone surrogate.
//! - **Depth.** Nesting deeper than [`MAX_DEPTH`] arrays and objects is refused with
//!   [`Error::TooDeep`] (`serde_json`'s recursion limit, which keeps a hostile peer from
//!   exhausting the stack), distinct from malformed JSON.
//!
//! ```
//! use tether_proto::json;
//! let v = json::from_str(r#"["\ud83d"]"#).unwrap();
//! let mut out = String::new();
//! json::write_value(&mut out, &v);
//! assert_eq!(out, r#"["\ud83d"]"#);
//! ```

use std::io;

use serde::Serialize;
use serde_json::Value;

use crate::Error;

/// The deepest nesting of arrays and objects accepted (127, the outer array of an event's
/// arguments included): `serde_json`'s recursion limit.
pub const MAX_DEPTH: usize = 127;

const FIRST_MAPPED: u32 = 0x10_F800;

/// The code point that stands for the lone surrogate `unit` (U+D800..U+DFFF).
fn mapped(unit: u16) -> Option<char> {
    (0xD800..=0xDFFF)
        .contains(&unit)
        .then(|| char::from_u32(FIRST_MAPPED + u32::from(unit - 0xD800)))
        .flatten()
}

/// The lone surrogate that `c` stands for, if it is one of the mapped code points.
fn surrogate_of(c: char) -> Option<u32> {
    let c = u32::from(c);
    (c >= FIRST_MAPPED).then(|| c - FIRST_MAPPED + 0xD800)
}

/// Parses JSON text from a peer. See the [module docs](self) for lone surrogates and
/// depth.
pub fn from_str(s: &str) -> Result<Value, Error> {
    match serde_json::from_str::<Value>(s) {
        Ok(v) => Ok(v),
        Err(_) => {
            if let Some(mapped) = map_lone_surrogates(s) {
                if let Ok(v) = serde_json::from_str::<Value>(&mapped) {
                    return Ok(v);
                }
            }
            if depth(s) > MAX_DEPTH {
                Err(Error::TooDeep)
            } else {
                Err(Error::BadJson)
            }
        }
    }
}

/// `s` with every escaped lone surrogate replaced by its mapped code point, or `None`
/// if it has none.
fn map_lone_surrogates(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        let digits = s.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        if b.get(i + 1) != Some(&b'u') {
            i += 2; // any other escape, `\\` included
            continue;
        }
        let Some(unit) = hex(i + 2) else {
            i += 2;
            continue;
        };
        if (0xD800..0xDC00).contains(&unit)
            && b.get(i + 6) == Some(&b'\\')
            && b.get(i + 7) == Some(&b'u')
            && hex(i + 8).is_some_and(|low| (0xDC00..0xE000).contains(&low))
        {
            i += 12; // a well-formed pair
            continue;
        }
        if let Some(c) = mapped(unit) {
            out.push_str(&s[copied..i]);
            out.push(c);
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&s[copied..]);
    Some(out)
}

/// How deeply arrays and objects nest in `s`, strings skipped.
fn depth(s: &str) -> usize {
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0, false, false);
    for &c in s.as_bytes() {
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Appends `v` as compact JSON, with mapped lone surrogates written back as escapes.
pub fn write_value(out: &mut String, v: &Value) {
    write(out, v);
}

/// Appends `s` as a JSON string, like [`write_value`].
pub fn write_str(out: &mut String, s: &str) {
    write(out, s);
}

fn write<T: Serialize + ?Sized>(out: &mut String, v: &T) {
    // serde_json writes bytes in many small pieces (a quote, a key, a colon...); they go to
    // the string's own buffer as bytes, checked as UTF-8 once at the end rather than piece
    // by piece (three checks per echo's ack were ~2 % of its instructions). serde_json
    // writes only whole `str` pieces and ASCII escapes, so the check always passes; were
    // it ever to fail, the text is kept with replacement characters rather than lost.
    let mut bytes = std::mem::take(out).into_bytes();
    let mut ser = serde_json::Serializer::with_formatter(&mut bytes, JsFormatter);
    // A `Value` or a `str` always serializes, and a `Vec` never fails to take bytes.
    let _ = v.serialize(&mut ser);
    *out = match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
}

/// serde_json's compact format, with the mapped code points escaped.
struct JsFormatter;

impl serde_json::ser::Formatter for JsFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Every mapped code point is encoded F4 8F A0..BF xx in UTF-8.
        if !fragment.as_bytes().contains(&0xF4) {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if let Some(unit) = surrogate_of(c) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                write!(w, "\\u{unit:04x}")?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(s: &str) -> String {
        let v = from_str(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let mut out = String::new();
        write_value(&mut out, &v);
        out
    }

    #[test]
    fn lone_surrogates_round_trip() {
        for s in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#"["a\ud83dz",{"k\udbff":"\udc00\ud800"}]"#,
            r#""\ud83d\ud83d""#,
        ] {
            assert_eq!(round_trip(s), s);
        }
    }

    #[test]
    fn pairs_and_other_escapes_are_left_alone() {
        assert_eq!(round_trip(r#""\ud83d\ude00""#), "\"😀\"");
        assert_eq!(round_trip(r#""\\ud83d""#), r#""\\ud83d""#);
        assert_eq!(from_str(r#""\ud83d""#).unwrap(), json!("\u{10f83d}"));
        assert_eq!(
            round_trip(r#"{"a":[1,2.5,null,true,"é\n"]}"#),
            r#"{"a":[1,2.5,null,true,"é\n"]}"#
        );
    }

    #[test]
    fn depth_is_limited_with_its_own_error() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(from_str(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(from_str(&deep), Err(Error::TooDeep));
        assert_eq!(from_str("[1,"), Err(Error::BadJson));
        assert_eq!(from_str(r#""\ud83d"#), Err(Error::BadJson));
        assert_eq!(from_str(r#""[[[[""#), Ok(json!("[[[[")));
    }

    #[test]
    fn never_panics_on_broken_escapes() {
        for s in [
            r#""\u"#,
            r#""\ud8"#,
            r#""\ud83d\u"#,
            r#""\ud83d\udc"#,
            "\"\\",
            r#""\uzzzz""#,
            "\"\\u\u{e9}\u{e9}\"",
        ] {
            let _ = from_str(s);
        }
    }
}
