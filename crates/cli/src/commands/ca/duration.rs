//! Durations as people type and read them: `24h`, `90m`, `30d`, `3600s` on the command line;
//! `23h 59m` and `expired 3h 2m ago` in output.

use std::time::Duration;

use jiff::Timestamp;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Parses `<number><unit>` with unit `s`, `m`, `h` or `d`. A single unit keeps the syntax
/// unambiguous (`m` is minutes, never months) and matches how Istio's TTL settings are written.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?}: expected a number followed by s, m, h or d");
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(invalid());
    }
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => MINUTE,
        "h" => HOUR,
        "d" => DAY,
        _ => return Err(invalid()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per_unit))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// The two most significant units of `seconds`: `3649d 23h`, `23h 59m`, `4m 10s`, `12s`. Below
/// two days it counts hours, the unit workload lifetimes are set in (24h: `24h 0m`, not `1d 0h`).
pub(crate) fn human(seconds: u64) -> String {
    let (days, hours) = (seconds / DAY, seconds % DAY / HOUR);
    let (minutes, secs) = (seconds % HOUR / MINUTE, seconds % MINUTE);
    if days >= 2 {
        format!("{days}d {hours}h")
    } else if seconds >= HOUR {
        let hours = seconds / HOUR;
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Time left until `not_after` seen from `now`: `23h 59m`, or `expired 3h 2m ago`.
pub(crate) fn until(not_after: Timestamp, now: Timestamp) -> String {
    let left = not_after.as_second() - now.as_second();
    if left >= 0 {
        human(left.unsigned_abs())
    } else {
        format!("expired {} ago", human(left.unsigned_abs()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("3600s").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn refuses_other_forms() {
        for bad in [
            "x", "", "24", "h", "1.5h", "-1h", "1w", "1h30m", "24 h", "1y",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(
                err,
                format!("invalid duration {bad:?}: expected a number followed by s, m, h or d"),
            );
        }
        assert!(
            parse("99999999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn prints_two_units() {
        assert_eq!(human(0), "0s");
        assert_eq!(human(59), "59s");
        assert_eq!(human(250), "4m 10s");
        assert_eq!(human(86_340), "23h 59m");
        assert_eq!(human(86_400), "24h 0m");
        assert_eq!(human(2 * 86_400 - 60), "47h 59m");
        assert_eq!(human(2 * 86_400), "2d 0h");
        assert_eq!(human(3650 * 86_400 - 3600), "3649d 23h");
    }

    #[test]
    fn says_when_expired() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let later = Timestamp::from_second(1_000_000 + 86_340).unwrap();
        let earlier = Timestamp::from_second(1_000_000 - 3 * 3600 - 120).unwrap();
        assert_eq!(until(later, now), "23h 59m");
        assert_eq!(until(earlier, now), "expired 3h 2m ago");
    }
}
