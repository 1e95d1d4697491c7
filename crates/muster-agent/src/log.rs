//! One line per event on stderr, with a UTC timestamp and a level; `debug` only with `--verbose`.
//!
//! Callers never pass a token or credential here: messages name secrets, never show them.

use std::fmt::Arguments;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the agent's log lines go.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    verbose: bool,
}

impl Log {
    pub fn new(verbose: bool) -> Self {
        Log { verbose }
    }

    pub fn debug(&self, message: Arguments<'_>) {
        if self.verbose {
            self.write("DEBUG", message);
        }
    }

    pub fn info(&self, message: Arguments<'_>) {
        self.write("INFO", message);
    }

    pub fn warn(&self, message: Arguments<'_>) {
        self.write("WARN", message);
    }

    pub fn error(&self, message: Arguments<'_>) {
        self.write("ERROR", message);
    }

    fn write(&self, level: &str, message: Arguments<'_>) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        eprintln!("{} {level} {message}", rfc3339(secs));
    }
}

/// `secs` since the Unix epoch as `YYYY-MM-DDThh:mm:ssZ` (Howard Hinnant's civil_from_days).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
