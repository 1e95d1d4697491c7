//! Fault injection shared by the mocks, and the Hetzner Cloud rate-limit budget.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a mock's injected rate-limit answer states its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP date>`, this far in the future (whole seconds on the wire).
    HttpDate(Duration),
    /// No `Retry-After` header.
    Absent,
}

/// Faults a test can switch on; each mock consults them on every request.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    /// The next `server_errors` requests answer `server_error_status`.
    pub(crate) server_errors: u32,
    pub(crate) server_error_status: u16,
    /// Every request is answered this much later.
    pub(crate) delay: Duration,
    /// The next `truncated` successful answers have their body cut in half.
    pub(crate) truncated: u32,
    /// `GET …/servers?page=N` answers 500 every time.
    pub(crate) failing_page: Option<u64>,
    /// The next `throttled` requests answer the API's rate-limit error.
    pub(crate) throttled: u32,
    pub(crate) throttle_wait: Option<RetryAfter>,
}

impl Faults {
    /// Takes one injected server error, if any are left.
    pub(crate) fn take_server_error(&mut self) -> Option<u16> {
        (self.server_errors > 0).then(|| {
            self.server_errors -= 1;
            self.server_error_status
        })
    }

    pub(crate) fn take_throttle(&mut self) -> Option<RetryAfter> {
        (self.throttled > 0).then(|| {
            self.throttled -= 1;
            self.throttle_wait.unwrap_or(RetryAfter::Seconds(1))
        })
    }

    pub(crate) fn take_truncation(&mut self) -> bool {
        (self.truncated > 0).then(|| self.truncated -= 1).is_some()
    }
}

/// Hetzner Cloud's budget: `limit` requests, refilled continuously at `refill_per_sec`; its
/// `RateLimit-Reset` is when it is full again.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) limit: u64,
    tokens: f64,
    pub(crate) refill_per_sec: f64,
    last: Instant,
}

impl Default for Budget {
    /// The real default: 3600 per hour, one back each second.
    fn default() -> Self {
        Budget::new(3600, 1.0)
    }
}

impl Budget {
    pub(crate) fn new(limit: u64, refill_per_sec: f64) -> Self {
        Budget {
            limit,
            tokens: limit as f64,
            refill_per_sec: refill_per_sec.max(f64::MIN_POSITIVE),
            last: Instant::now(),
        }
    }

    pub(crate) fn set_remaining(&mut self, remaining: u64) {
        self.refill();
        self.tokens = remaining.min(self.limit) as f64;
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let gained = now.duration_since(self.last).as_secs_f64() * self.refill_per_sec;
        self.tokens = (self.tokens + gained).min(self.limit as f64);
        self.last = now;
    }

    /// Spends one request, or answers how long until one is back.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / self.refill_per_sec,
            ))
        }
    }

    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (UNIX seconds).
    pub(crate) fn headers(&mut self) -> [(&'static str, String); 3] {
        self.refill();
        let missing = self.limit as f64 - self.tokens;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let reset = (now + missing / self.refill_per_sec).ceil() as u64;
        [
            ("ratelimit-limit", self.limit.to_string()),
            (
                "ratelimit-remaining",
                (self.tokens.floor() as u64).to_string(),
            ),
            ("ratelimit-reset", reset.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_runs_out_and_says_when_one_is_back() {
        let mut b = Budget::new(3, 1.0);
        assert!(b.take().is_ok() && b.take().is_ok() && b.take().is_ok());
        let wait = b.take().unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        let [limit, remaining, _] = b.headers();
        assert_eq!(limit.1, "3");
        assert_eq!(remaining.1, "0");
        b.set_remaining(2);
        assert_eq!(b.headers()[1].1, "2");
    }

    #[test]
    fn faults_are_used_up() {
        let mut f = Faults {
            server_errors: 2,
            server_error_status: 503,
            truncated: 1,
            ..Faults::default()
        };
        assert_eq!(f.take_server_error(), Some(503));
        assert_eq!(f.take_server_error(), Some(503));
        assert_eq!(f.take_server_error(), None);
        assert!(f.take_truncation());
        assert!(!f.take_truncation());
        assert_eq!(f.take_throttle(), None);
    }
}
