//! Timestamps as JavaScript's `Date.prototype.toJSON` writes them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, as `2026-12-03T06:09:41.123Z`.
pub(super) fn iso_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    iso(ms)
}

/// Milliseconds since the epoch as an ISO 8601 UTC timestamp.
fn iso(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::iso;

    #[test]
    fn formats_as_javascript_does() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        // new Date(1796278181123).toJSON()
        assert_eq!(iso(1_796_278_181_123), "2026-12-03T06:09:41.123Z");
        // a leap day: new Date(951782400000).toJSON()
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
