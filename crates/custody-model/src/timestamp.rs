//! RFC 3339 timestamps, normalised to UTC so that the canonical form of an event
//! does not depend on the offset a caller wrote.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, always held and written in UTC (`2026-12-01T10:00:01Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// Parses RFC 3339 (`2026-12-01T10:00:01Z`, `2026-12-01T12:00:01.5+02:00`).
    pub fn parse(s: &str) -> Result<Self, String> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
            .map_err(|_| format!("`{s}` is not an RFC 3339 timestamp such as 2026-12-01T10:00:01Z"))
    }

    pub fn from_unix_nanos(nanos: i64) -> Self {
        Self(OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    pub fn unix_nanos(&self) -> i64 {
        i64::try_from(self.0.unix_timestamp_nanos()).unwrap_or(i64::MAX)
    }

    pub fn unix_seconds(&self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The UTC calendar day, `YYYY-MM-DD`.
    pub fn utc_day(&self) -> String {
        let date = self.0.date();
        format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatting a UTC date between years 0 and 9999 cannot fail; the parser
        // rejects anything outside that range.
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_normalise_to_utc_and_round_trip() {
        let t = Timestamp::parse("2026-12-01T12:00:01.5+02:00").unwrap();
        assert_eq!(t.to_string(), "2026-12-01T10:00:01.5Z");
        assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        assert_eq!(Timestamp::from_unix_nanos(t.unix_nanos()), t);
        assert_eq!(Timestamp::parse("2026-12-01T23:30:00-02:00").unwrap().utc_day(), "2026-12-02");
    }

    #[test]
    fn bad_timestamps_are_refused_with_an_example() {
        let err = Timestamp::parse("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_err());
    }
}
