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
///
/// The output is byte for byte what `serde_json` writes (the same escapes, the same
/// number formats), plus the lone surrogates of the [module docs](self).
pub fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    let mut digits = itoa::Buffer::new();
    if let Some(u) = n.as_u64() {
        out.push_str(digits.format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(digits.format(i));
    } else {
        // Floats keep serde_json's own format (shortest round trip, `1.0`, `1e+100`).
        let mut bytes = std::mem::take(out).into_bytes();
        // A `Number` always serializes, and a `Vec` never fails to take bytes.
        let _ = n.serialize(&mut serde_json::Serializer::new(&mut bytes));
        *out = String::from_utf8(bytes).unwrap_or_else(|e| {
            // serde_json writes ASCII digits only; unreachable, kept lossless anyway.
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        });
    }
}

/// Appends `s` as a JSON string, like [`write_value`].
///
/// Written here rather than through `serde_json`'s serializer, which was half of an
/// echo's acknowledgement: it scans eight bytes at a time for the few that need an
/// escape and copies the runs between them whole.
pub fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if !needs_escape_in(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if !NEEDS_ESCAPE[usize::from(b)] {
            i += 1;
            continue;
        }
        // `i` is at an ASCII byte or at the lead byte 0xF4: a char boundary.
        out.push_str(&s[copied..i]);
        if b == 0xF4 {
            let c = s[i..].chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
            match surrogate_of(c) {
                Some(unit) => push_unicode_escape(out, unit),
                None => out.push(c),
            }
            i += c.len_utf8();
        } else {
            match b {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                0x08 => out.push_str("\\b"),
                0x0C => out.push_str("\\f"),
                _ => push_unicode_escape(out, u32::from(b)),
            }
            i += 1;
        }
        copied = i;
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

/// The bytes that [`write_str`] cannot copy as they are: control characters, `"`, `\\`,
/// and 0xF4, the lead byte of the mapped lone surrogates (and of U+100000..U+10FFFF).
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0xF4] = true;
    t
};

/// Whether any of the eight bytes of `w` is one of [`NEEDS_ESCAPE`]'s (the classic
/// "has a zero byte" test, `(x - 0x01..) & !x & 0x80..`, which never misses one).
fn needs_escape_in(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (below_space
        | zero_in(w ^ (ONES * u64::from(b'"')))
        | zero_in(w ^ (ONES * u64::from(b'\\')))
        | zero_in(w ^ (ONES * 0xF4)))
        != 0
}

/// `\\u` and four lower-case hex digits, as `serde_json` and `JSON.stringify` write them.
fn push_unicode_escape(out: &mut String, unit: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[((unit >> shift) & 0xF) as usize]));
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
    fn writes_what_serde_json_writes() {
        // Every byte class at every position of the eight-byte scan, and every value kind.
        let mut strings: Vec<String> = (0u8..0x80).map(|b| char::from(b).to_string()).collect();
        for len in [0, 1, 7, 8, 9, 15, 16, 17, 40] {
            for special in [
                '"',
                '\\',
                '\n',
                '\u{1}',
                '\u{1f}',
                '\u{7f}',
                'é',
                '€',
                '😀',
                '\u{100000}',
            ] {
                for at in 0..=len {
                    let mut s: String = "abcdefghij".chars().cycle().take(len).collect();
                    s.insert(at, special);
                    strings.push(s);
                }
            }
        }
        for s in &strings {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
        let v = json!([null, true, false, 0, -1, u64::MAX, i64::MIN, 1.5, -0.0, 1e300, 0.1,
            {"k\"ey": [{}, [], ""], "z": {"a": "b\u{0}"}}, strings]);
        let mut out = String::new();
        write_value(&mut out, &v);
        assert_eq!(out, serde_json::to_string(&v).unwrap());
    }

    #[test]
    fn mapped_code_points_next_to_others_of_plane_16() {
        // U+10F83D is a mapped lone surrogate; U+100000 shares its lead byte 0xF4 but is not.
        let mut out = String::new();
        write_str(&mut out, "a\u{10f83d}b\u{100000}c\u{10ffff}");
        assert_eq!(out, "\"a\\ud83db\u{100000}c\\udfff\"");
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
