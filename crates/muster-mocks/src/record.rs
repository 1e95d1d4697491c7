//! What a mock saw: one record per answered request, and a way to wait for a record to appear.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::watch;

/// The most records a mock keeps (the oldest go first), so a long demo stays small.
const MAX_RECORDS: usize = 100_000;

/// One request a mock answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The status answered.
    pub status: u16,
    /// When the request arrived.
    pub arrived: Instant,
    /// When the answer was ready.
    pub answered: Instant,
}

impl RequestRecord {
    /// The value of a query parameter (first occurrence, decoded).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The request log of a mock, with change notification for tests that wait on it.
#[derive(Debug)]
pub(crate) struct Recorder {
    log: Mutex<Vec<RequestRecord>>,
    version: watch::Sender<u64>,
    cancelled: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            log: Mutex::default(),
            version: watch::Sender::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    pub(crate) fn push(&self, record: RequestRecord) {
        {
            let mut log = self.log.lock().expect("log lock");
            if log.len() >= MAX_RECORDS {
                log.drain(..MAX_RECORDS / 10);
            }
            log.push(record);
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn records(&self) -> Vec<RequestRecord> {
        self.log.lock().expect("log lock").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.log.lock().expect("log lock").len()
    }

    pub(crate) fn clear(&self) {
        self.log.lock().expect("log lock").clear();
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Waits until `pred` holds for the log and the count of cancelled requests.
    pub(crate) async fn wait_for(&self, pred: impl Fn(&[RequestRecord], u64) -> bool) {
        let mut rx = self.version.subscribe();
        loop {
            {
                let log = self.log.lock().expect("log lock");
                if pred(&log, self.cancelled()) {
                    return;
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Counts the request as cancelled if it is dropped before it is answered (the client went).
pub(crate) struct CancelGuard<'a> {
    recorder: &'a Recorder,
    armed: bool,
}

impl<'a> CancelGuard<'a> {
    pub(crate) fn new(recorder: &'a Recorder) -> Self {
        CancelGuard {
            recorder,
            armed: true,
        }
    }

    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.recorder.cancel();
        }
    }
}
