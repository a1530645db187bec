//! The UTC calendar the usage counters and token limits use: today's date, this month, and
//! how long until tomorrow.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds: when a chat was last written.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A UTC day, as the usage keys and answers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtcDay {
    /// `2026-11-25`
    pub date: String,
    /// `2026-11`
    pub month: String,
    /// Seconds until the next UTC midnight, at least 1.
    pub seconds_left: u64,
}

impl UtcDay {
    /// The day it is now.
    pub fn today() -> UtcDay {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        UtcDay::at(seconds)
    }

    /// The day `seconds` after the Unix epoch falls on.
    pub fn at(seconds: u64) -> UtcDay {
        const DAY: u64 = 86_400;
        let (year, month, day) = civil_from_days(seconds / DAY);
        UtcDay {
            date: format!("{year:04}-{month:02}-{day:02}"),
            month: format!("{year:04}-{month:02}"),
            seconds_left: (DAY - seconds % DAY).max(1),
        }
    }
}

/// Year, month, day of the `days`-th day after 1970-01-01 (Howard Hinnant's algorithm for
/// the proleptic Gregorian calendar).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_named_in_utc() {
        assert_eq!(UtcDay::at(0).date, "1970-01-01");
        // 2026-11-25T09:00:00Z
        let day = UtcDay::at(1_795_597_200);
        assert_eq!(
            (day.date.as_str(), day.month.as_str()),
            ("2026-11-25", "2026-11")
        );
        assert_eq!(day.seconds_left, 15 * 3600);
        assert_eq!(UtcDay::at(951_782_400).date, "2000-02-29");
        assert_eq!(UtcDay::at(1_704_067_199).date, "2023-12-31");
        assert_eq!(UtcDay::at(1_704_067_199).seconds_left, 1);
        assert_eq!(UtcDay::at(1_704_067_200).date, "2024-01-01");
    }
}
