//! Command-line flags and `MUSTER_AGENT_*` environment variables, parsed by hand.
//!
//! A hand parser instead of clap keeps the binary small (clap's derive adds about 200 KiB at
//! `opt-level = "z"`). Precedence: defaults, then the environment, then flags. Long flags take
//! one or two dashes (`-api` as VM Tracker's Go client, or `--api`) and `--flag value` or
//! `--flag=value`.

use std::path::PathBuf;
use std::time::Duration;

use crate::Secret;

/// The usage text of `--help`.
pub const HELP: &str = "\
muster-agent: registers this machine with a muster server and sends heartbeats and reports.

Usage: muster-agent --api URL [options]

Options (each also read from the environment variable shown):
  --api URL               muster server, e.g. https://muster.example.com   [MUSTER_AGENT_API]
  --token TOKEN           enrollment token (mse_...), exchanged for a per-agent credential
                          on first registration                             [MUSTER_AGENT_TOKEN]
  --token-file PATH       read the enrollment token from a file       [MUSTER_AGENT_TOKEN_FILE]
  --interface NAME        interface whose IPv4 is reported (default eth0) [MUSTER_AGENT_INTERFACE]
  --interval DURATION     heartbeat interval (default 30s)             [MUSTER_AGENT_INTERVAL]
  --retry DURATION        delay between the initial registration tries (default 5s)
                                                                       [MUSTER_AGENT_RETRY]
  --report-interval DUR   report interval, 0 disables (default 5m) [MUSTER_AGENT_REPORT_INTERVAL]
  --state-dir DIR         where the credential is kept (default /var/lib/muster-agent)
                                                                       [MUSTER_AGENT_STATE_DIR]
  --ca-cert PATH          trust this PEM CA bundle instead of the built-in web roots
                                                                       [MUSTER_AGENT_CA_CERT]
  --host-root DIR         the host's / when running in a container (default /)
                                                                       [MUSTER_AGENT_HOST_ROOT]
  --verbose               log every heartbeat                          [MUSTER_AGENT_VERBOSE=1]
  -h, --help              this text
  -V, --version           the agent's version

Durations: 30s, 5m, 1h, 1h30m or plain seconds (30).
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server's base URL, without a trailing slash.
    pub api: String,
    pub token: Option<Secret>,
    pub interface: String,
    pub interval: Duration,
    pub retry: Duration,
    /// `None`: reports are disabled.
    pub report_interval: Option<Duration>,
    pub state_dir: PathBuf,
    pub ca_cert: Option<PathBuf>,
    pub host_root: PathBuf,
    pub verbose: bool,
}

/// The longest heartbeat interval the server accepts.
pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);

const FLAGS: &[(&str, &str)] = &[
    ("api", "MUSTER_AGENT_API"),
    ("token", "MUSTER_AGENT_TOKEN"),
    ("token-file", "MUSTER_AGENT_TOKEN_FILE"),
    ("interface", "MUSTER_AGENT_INTERFACE"),
    ("interval", "MUSTER_AGENT_INTERVAL"),
    ("retry", "MUSTER_AGENT_RETRY"),
    ("report-interval", "MUSTER_AGENT_REPORT_INTERVAL"),
    ("state-dir", "MUSTER_AGENT_STATE_DIR"),
    ("ca-cert", "MUSTER_AGENT_CA_CERT"),
    ("host-root", "MUSTER_AGENT_HOST_ROOT"),
    ("verbose", "MUSTER_AGENT_VERBOSE"),
];

/// Parses flags (without the program name) over the environment `env`.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut values: Vec<Option<String>> = FLAGS
        .iter()
        .map(|(_, var)| env(var).filter(|v| !v.is_empty()))
        .collect();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" | "-help" => return Ok(Command::Help),
            "-V" | "--version" | "-version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(flag) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|f| !f.is_empty())
        else {
            return Err(format!("unexpected argument `{arg}`"));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        let Some(index) = FLAGS.iter().position(|(f, _)| *f == name) else {
            return Err(format!("unknown flag `--{name}`"));
        };
        let value = if name == "verbose" {
            inline.unwrap_or_else(|| "true".into())
        } else {
            match inline.or_else(|| args.next()) {
                Some(v) => v,
                None => return Err(format!("`--{name}` needs a value")),
            }
        };
        values[index] = Some(value);
    }
    let get = |name: &str| {
        let i = FLAGS
            .iter()
            .position(|(f, _)| *f == name)
            .expect("known flag");
        values[i].as_deref()
    };
    let duration = |name: &str, default: Duration| match get(name) {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|e| format!("`--{name}`: {e}")),
    };

    let api = get("api").ok_or("`--api URL` is required")?;
    let api = api.trim_end_matches('/').to_string();
    if !(api.starts_with("http://") || api.starts_with("https://")) {
        return Err(format!(
            "`--api`: `{}` must start with http:// or https://",
            redact_url(&api)
        ));
    }
    let token = match (get("token"), get("token-file")) {
        (Some(_), Some(_)) => return Err("give `--token` or `--token-file`, not both".into()),
        (Some(t), None) => Secret::new(t),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("`--token-file`: cannot read {path}: {e}"))?;
            Some(Secret::new(&text).ok_or_else(|| format!("`--token-file`: {path} is empty"))?)
        }
        (None, None) => None,
    };
    let interval = duration("interval", Duration::from_secs(30))?;
    if interval.is_zero() || interval > MAX_INTERVAL {
        return Err("`--interval` must be between 1s and 24h".into());
    }
    let report_interval =
        Some(duration("report-interval", Duration::from_secs(300))?).filter(|d| !d.is_zero());
    let verbose = match get("verbose") {
        None => false,
        Some("1" | "true" | "yes" | "on") => true,
        Some("0" | "false" | "no" | "off") => false,
        Some(v) => return Err(format!("`--verbose`: `{v}` is not true or false")),
    };
    Ok(Command::Run(Box::new(Config {
        api,
        token,
        interface: get("interface").unwrap_or("eth0").to_string(),
        interval,
        retry: duration("retry", Duration::from_secs(5))?,
        report_interval,
        state_dir: PathBuf::from(get("state-dir").unwrap_or("/var/lib/muster-agent")),
        ca_cert: get("ca-cert").map(PathBuf::from),
        host_root: PathBuf::from(get("host-root").unwrap_or("/")),
        verbose,
    })))
}

/// Parses `30s`, `5m`, `1h`, `1h30m` or plain seconds (`30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not a duration (30s, 5m, 1h, or seconds)");
    if s.is_empty() {
        return Err(bad());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit = match rest.as_bytes().get(digits) {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

/// A URL without any `user:password@` part, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn config(a: &[&str], env: impl Fn(&str) -> Option<String>) -> Config {
        match parse(args(a), env).unwrap() {
            Command::Run(c) => *c,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("30s", 30),
            ("5m", 300),
            ("1h", 3600),
            ("45", 45),
            ("0", 0),
            ("1h30m", 5400),
            (" 2m ", 120),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "s",
            "5x",
            "1.5s",
            "-1s",
            "5 m",
            "m5",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn defaults() {
        let c = config(&["--api", "https://m.example/"], no_env);
        assert_eq!(c.api, "https://m.example");
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.retry, Duration::from_secs(5));
        assert_eq!(c.report_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/muster-agent"));
        assert_eq!(c.host_root, PathBuf::from("/"));
        assert!(c.token.is_none() && !c.verbose && c.ca_cert.is_none());
    }

    #[test]
    fn flags_in_every_spelling() {
        let c = config(
            &[
                "-api=http://10.0.0.1:8080",
                "--token",
                "mse_x",
                "--interface=ens3",
                "-interval",
                "10s",
                "--retry=1s",
                "--report-interval",
                "0",
                "--state-dir",
                "/tmp/s",
                "--verbose",
            ],
            no_env,
        );
        assert_eq!(c.api, "http://10.0.0.1:8080");
        assert_eq!(c.token.unwrap().expose(), "mse_x");
        assert_eq!(c.interface, "ens3");
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.retry, Duration::from_secs(1));
        assert_eq!(c.report_interval, None);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert!(c.verbose);
    }

    #[test]
    fn flags_override_the_environment() {
        let env = |name: &str| match name {
            "MUSTER_AGENT_API" => Some("https://env.example".to_string()),
            "MUSTER_AGENT_TOKEN" => Some("mse_env".to_string()),
            "MUSTER_AGENT_INTERVAL" => Some("1m".to_string()),
            "MUSTER_AGENT_VERBOSE" => Some("1".to_string()),
            _ => None,
        };
        let c = config(&["--interval", "15s"], env);
        assert_eq!(c.api, "https://env.example");
        assert_eq!(c.token.unwrap().expose(), "mse_env");
        assert_eq!(c.interval, Duration::from_secs(15));
        assert!(c.verbose);
    }

    #[test]
    fn token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "mse_from_file\n").unwrap();
        let c = config(
            &["--api", "http://x", "--token-file", path.to_str().unwrap()],
            no_env,
        );
        assert_eq!(c.token.unwrap().expose(), "mse_from_file");
    }

    #[test]
    fn usage_errors() {
        for (a, wanted) in [
            (&[][..], "--api URL` is required"),
            (&["--api", "ftp://x"][..], "must start with http"),
            (
                &["--api", "http://x", "--interval", "0"][..],
                "between 1s and 24h",
            ),
            (
                &["--api", "http://x", "--interval", "25h"][..],
                "between 1s and 24h",
            ),
            (&["--api", "http://x", "--retry", "soon"][..], "`--retry`"),
            (
                &["--api", "http://x", "--bogus"][..],
                "unknown flag `--bogus`",
            ),
            (&["--api"][..], "needs a value"),
            (&["--api", "http://x", "stray"][..], "unexpected argument"),
            (
                &["--api", "http://x", "--verbose=maybe"][..],
                "not true or false",
            ),
        ] {
            let e = parse(args(a), no_env).unwrap_err();
            assert!(e.contains(wanted), "{a:?}: {e}");
        }
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(
            parse(args(&["--help"]), no_env),
            Ok(Command::Help)
        ));
        assert!(matches!(parse(args(&["-V"]), no_env), Ok(Command::Version)));
    }

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(redact_url("https://u:p@h:1/x@y"), "https://h:1/x@y");
        assert_eq!(redact_url("http://h/a"), "http://h/a");
    }
}
