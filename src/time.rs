//! Timestamps: microseconds since the Unix epoch, parsed from and printed as Langfuse's ISO-8601.
//!
//! Owns: the one time type every record uses, its parsing rules (an explicit offset is required,
//! as Langfuse requires) and its output format (millisecond `Z` strings, as `toISOString()`).
//! Must not touch: anything else.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const MIN: Timestamp = Timestamp(i64::MIN);
    pub const MAX: Timestamp = Timestamp(i64::MAX);

    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    pub fn from_nanos(ns: u64) -> Self {
        Timestamp(i64::try_from(ns / 1000).unwrap_or(i64::MAX))
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms.saturating_mul(1000))
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Timestamp(i64::try_from(now.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
    }

    /// Parses an RFC 3339 / ISO-8601 time with an explicit offset or `Z`. A bare local time is
    /// rejected, as Langfuse rejects it: its meaning depends on a zone we cannot know.
    pub fn parse(s: &str) -> Option<Self> {
        let dt = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos() / 1000)
            .ok()
            .map(Timestamp)
    }

    /// Langfuse's output form: `2025-01-01T12:00:00.000Z`.
    pub fn to_iso(self) -> String {
        let Ok(dt) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000) else {
            return "1970-01-01T00:00:00.000Z".into();
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.millisecond()
        )
    }

    /// Like `to_iso`, with all six fractional digits: what exports write, so a re-import
    /// reproduces latencies to the microsecond. Langfuse and our parser both accept it.
    pub fn to_iso_micros(self) -> String {
        let millis = self.to_iso();
        let sub_milli = self.0.rem_euclid(1000);
        format!("{}{sub_milli:03}Z", &millis[..millis.len() - 1])
    }

    /// Seconds between two times, as Langfuse reports latencies.
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0.saturating_sub(earlier.0)) as f64 / 1_000_000.0
    }

    /// Start of the UTC day this time falls in, as `YYYY-MM-DD`.
    pub fn date(self) -> String {
        self.to_iso()[..10].to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_prints_millis() {
        let t = Timestamp::parse("2026-11-26T18:03:13.183502Z").unwrap();
        assert_eq!(t.to_iso(), "2026-11-26T18:03:13.183Z");
        let t2 = Timestamp::parse("2026-11-26T19:03:13.183502+01:00").unwrap();
        assert_eq!(t, t2);
        assert!(Timestamp::parse("2026-11-26T18:03:13").is_none());
        assert!(Timestamp::parse("yesterday").is_none());
        assert_eq!(t.to_iso_micros(), "2026-11-26T18:03:13.183502Z");
        assert_eq!(Timestamp::parse(&t.to_iso_micros()), Some(t));
        let before_epoch = Timestamp::from_micros(-1);
        assert_eq!(
            Timestamp::parse(&before_epoch.to_iso_micros()),
            Some(before_epoch)
        );
    }
}
