use std::fmt;

use base64::Engine as _;
use rand::RngCore;

/// An Engine.IO session id: 20 URL-safe characters from 120 random bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; 20]);

impl Sid {
    /// A new random id from the operating system's CSPRNG-seeded generator.
    pub fn random() -> Self {
        Sid(random_id::<15, 20>())
    }

    /// Parses an id sent by a client.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `N` random bytes as `M` URL-safe base64 characters (`M` = 4·N/3).
pub fn random_id<const N: usize, const M: usize>() -> [u8; M] {
    let mut raw = [0u8; N];
    rand::rng().fill_bytes(&mut raw);
    let mut out = [0u8; M];
    let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(raw, &mut out);
    out
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_and_differ() {
        let a = Sid::random();
        let b = Sid::random();
        assert_ne!(a, b);
        assert_eq!(Sid::parse(a.as_str()), Some(a));
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa!"), None);
    }
}
