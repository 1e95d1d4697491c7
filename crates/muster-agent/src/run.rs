//! The agent's life: enroll or resume, register (3 tries), then heartbeats and reports on their
//! own schedules until SIGTERM/SIGINT, then a last `going_offline` registration and exit 0.
//!
//! One thread. Waits are reads with a timeout on a socket that the signal handler writes to
//! (`signal_hook::low_level::pipe`), so a signal ends any wait at once.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::Secret;
use crate::cli::{Config, MAX_INTERVAL, redact_url};
use crate::client::{CallError, Client, RegisterAnswer, RegisterBody};
use crate::log::Log;
use crate::state::{MachineIdSource, StateDir};
use crate::{facts, report};

/// The seed's initial registration: 3 tries, `--retry` apart.
pub const INITIAL_TRIES: u32 = 3;

/// Runs the agent until a signal; the process's exit code.
pub fn run(config: Config) -> ExitCode {
    let log = Log::new(config.verbose);
    let signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            log.error(format_args!("cannot install signal handlers: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let ca = match &config.ca_cert {
        None => None,
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                log.error(format_args!(
                    "cannot read --ca-cert {}: {e}",
                    path.display()
                ));
                return ExitCode::from(2);
            }
        },
    };
    let client = match Client::new(&config.api, ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log.error(format_args!("--ca-cert: {e}"));
            return ExitCode::from(2);
        }
    };
    let state = StateDir::new(&config.state_dir);
    let credential = state.credential();
    if credential.is_none() && config.token.is_none() {
        log.error(format_args!(
            "no credential in {} and no enrollment token: give --token or MUSTER_AGENT_TOKEN",
            state.path().display()
        ));
        return ExitCode::from(2);
    }
    let (machine_id, source) = crate::state::machine_id(&config.host_root, &state);
    match source {
        MachineIdSource::Unsaved(e) => log.warn(format_args!(
            "no /etc/machine-id and cannot keep a generated id in {}: {e}; this machine's id \
             will change at the next start",
            state.path().display()
        )),
        MachineIdSource::Generated => log.info(format_args!(
            "no /etc/machine-id: generated a machine id, kept in {}",
            state.path().display()
        )),
        MachineIdSource::Host | MachineIdSource::Stored => {}
    }
    log.info(format_args!(
        "muster-agent {} starting: server {}, interface {}, heartbeat every {}s, {}, {}",
        crate::VERSION,
        redact_url(&config.api),
        config.interface,
        config.interval.as_secs(),
        match config.report_interval {
            Some(r) => format!("report every {}s", r.as_secs()),
            None => "reports off".to_string(),
        },
        if credential.is_some() {
            "using the stored credential"
        } else {
            "enrolling with the token"
        },
    ));
    let mut agent = Agent {
        client,
        state,
        token: config.token.clone(),
        credential,
        machine_id,
        interval: config.interval,
        log,
        config,
        failing: false,
    };
    agent.run(&signals);
    ExitCode::SUCCESS
}

/// The running agent.
struct Agent {
    config: Config,
    client: Client,
    state: StateDir,
    token: Option<Secret>,
    credential: Option<Secret>,
    machine_id: String,
    /// The heartbeat interval in force (the server may change it).
    interval: Duration,
    log: Log,
    /// The last heartbeat failed: log the recovery.
    failing: bool,
}

impl Agent {
    fn run(&mut self, signals: &Signals) {
        let mut registered = false;
        for attempt in 1..=INITIAL_TRIES {
            match self.register(false) {
                Ok(()) => {
                    registered = true;
                    break;
                }
                Err(e) => self.log.warn(format_args!(
                    "registration attempt {attempt}/{INITIAL_TRIES} failed: {e}"
                )),
            }
            if attempt < INITIAL_TRIES && signals.wait(self.config.retry) {
                return self.goodbye();
            }
        }
        if !registered {
            self.failing = true;
            self.log.error(format_args!(
                "initial registration failed after {INITIAL_TRIES} attempts; heartbeats go on \
                 every {}s",
                self.interval.as_secs()
            ));
        }
        let now = Instant::now();
        let mut next_heartbeat = now + self.interval;
        // The first report right away, so the server has one without waiting minutes.
        let mut next_report = self.config.report_interval.map(|_| now);
        loop {
            let due = next_report.map_or(next_heartbeat, |r| r.min(next_heartbeat));
            if signals.wait(due.saturating_duration_since(Instant::now())) {
                return self.goodbye();
            }
            let now = Instant::now();
            if now >= next_heartbeat {
                self.heartbeat();
                next_heartbeat = advance(next_heartbeat, self.interval, Instant::now());
            }
            if let (Some(at), Some(every)) = (next_report, self.config.report_interval)
                && now >= at
            {
                next_report = Some(if self.report() {
                    advance(at, every, Instant::now())
                } else {
                    // Not enrolled yet: report right after the next heartbeat.
                    next_heartbeat
                });
            }
        }
    }

    fn heartbeat(&mut self) {
        match self.register(false) {
            Ok(()) if self.failing => {
                self.failing = false;
                self.log.info(format_args!("heartbeat accepted again"));
            }
            Ok(()) => self.log.debug(format_args!("heartbeat accepted")),
            Err(e) => {
                self.failing = true;
                self.log.warn(format_args!(
                    "heartbeat failed: {e}; next try in {}s",
                    self.interval.as_secs()
                ));
            }
        }
    }

    /// One registration (heartbeat), re-enrolling once with the token when the stored credential
    /// is rejected.
    fn register(&mut self, going_offline: bool) -> Result<(), CallError> {
        let facts = facts::collect(&self.config.host_root, &self.config.interface);
        let body = RegisterBody::new(&facts, &self.machine_id, self.interval, going_offline);
        let (auth, with_credential) = match (&self.credential, &self.token) {
            (Some(c), _) => (c, true),
            (None, Some(t)) => (t, false),
            (None, None) => unreachable!("checked at start"),
        };
        let answer = match self.client.register(auth, &body, going_offline) {
            Err(CallError::Unauthorized(why)) if with_credential && !going_offline => {
                let Some(token) = &self.token else {
                    return Err(CallError::Unauthorized(format!(
                        "{why} (the stored credential was rejected and no enrollment token is \
                         configured)"
                    )));
                };
                self.log.warn(format_args!(
                    "the stored credential was rejected ({why}); re-enrolling with the \
                     enrollment token"
                ));
                self.client.register(token, &body, false)
            }
            other => other,
        }?;
        self.accept(answer);
        Ok(())
    }

    fn accept(&mut self, answer: RegisterAnswer) {
        if let Some(credential) = answer.credential.as_deref().and_then(Secret::new)
            && self.credential.as_ref() != Some(&credential)
        {
            match self.state.store_credential(&credential) {
                Ok(()) => self.log.info(format_args!(
                    "enrolled as agent {}; credential stored in {}",
                    answer.agent_id.as_deref().unwrap_or("?"),
                    self.state.path().display()
                )),
                Err(e) => self.log.error(format_args!(
                    "enrolled as agent {}, but cannot store the credential in {}: {e}; it is \
                     kept in memory until the agent stops",
                    answer.agent_id.as_deref().unwrap_or("?"),
                    self.state.path().display()
                )),
            }
            self.credential = Some(credential);
        }
        if let Some(secs) = answer.interval_seconds
            && secs > 0
        {
            let wanted = Duration::from_secs(secs).min(MAX_INTERVAL);
            if wanted != self.interval {
                self.log.info(format_args!(
                    "the server asks for a heartbeat every {secs}s (was {}s)",
                    self.interval.as_secs()
                ));
                self.interval = wanted;
            }
        }
    }

    /// Sends a report; false when there is no credential to send it with yet.
    fn report(&mut self) -> bool {
        let Some(credential) = &self.credential else {
            self.log
                .debug(format_args!("report skipped: not enrolled yet"));
            return false;
        };
        let facts = facts::collect(&self.config.host_root, &self.config.interface);
        let report = report::collect(&self.config.host_root, &facts.hostname, facts.cpu_count);
        match self.client.report(credential, &report) {
            Ok(()) => self.log.debug(format_args!(
                "report accepted (health {}, {} disks)",
                report.health,
                report.disks.len()
            )),
            Err(e) => self.log.warn(format_args!("report failed: {e}")),
        }
        true
    }

    /// The last registration, `going_offline`, with short timeouts.
    fn goodbye(&mut self) {
        if self.credential.is_none() {
            // Never enrolled: there is no agent on the server to mark offline.
            self.log.info(format_args!(
                "signal received; not enrolled, nothing to tell the server; exiting"
            ));
            return;
        }
        self.log.info(format_args!(
            "signal received: telling the server this machine goes offline"
        ));
        match self.register(true) {
            Ok(()) => self.log.info(format_args!("the server knows; exiting")),
            Err(e) => self.log.warn(format_args!("goodbye failed: {e}; exiting")),
        }
    }
}

/// The next time of a schedule after `now`: `previous + every`, or `now + every` when late (no
/// bursts after a suspend or a slow call).
pub fn advance(previous: Instant, every: Duration, now: Instant) -> Instant {
    let next = previous + every;
    if next <= now { now + every } else { next }
}

/// SIGTERM and SIGINT, as bytes on a socket.
struct Signals {
    receiver: UnixStream,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        let (receiver, sender) = UnixStream::pair()?;
        sender.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGTERM, sender.try_clone()?)?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, sender)?;
        Ok(Signals { receiver })
    }

    /// Waits `timeout`; true as soon as a signal arrives (also one that came while busy).
    fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut byte = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ready = if left.is_zero() {
                self.receiver.set_nonblocking(true)
            } else {
                self.receiver
                    .set_nonblocking(false)
                    .and_then(|()| self.receiver.set_read_timeout(Some(left)))
            };
            if ready.is_err() {
                // Cannot wait on the socket: fall back to sleeping (signals then end the
                // process at the next wait at the latest).
                std::thread::sleep(left);
                return false;
            }
            match (&self.receiver).read(&mut byte) {
                Ok(n) if n > 0 => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Ok(_) | Err(_) if left.is_zero() => return false,
                Ok(_) => {
                    std::thread::sleep(left);
                    return false;
                }
                Err(_) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::advance;
    use std::time::{Duration, Instant};

    #[test]
    fn schedules_do_not_drift_or_burst() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // On time: the fixed grid.
        assert_eq!(advance(t0, s * 30, t0 + s), t0 + s * 30);
        // A slow call ate part of the interval: still the grid.
        assert_eq!(advance(t0, s * 30, t0 + s * 29), t0 + s * 30);
        // Late by more than an interval (suspend): one interval from now, no catch-up burst.
        assert_eq!(advance(t0, s * 30, t0 + s * 95), t0 + s * 125);
    }
}
