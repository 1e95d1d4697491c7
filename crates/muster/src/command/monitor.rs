//! `muster monitor --repo owner/name …`: security findings of GitHub repositories (code
//! scanning, Dependabot, secret scanning), critical first. `GITHUB_TOKEN` signs in,
//! `GITHUB_API_URL` points elsewhere (GitHub Enterprise, a mock).

use std::process::ExitCode;

use clap::Args;
use muster_infra::findings::{self, MonitorReport};
use muster_providers::GithubClient;

use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// `owner/name`, repeatable.
    #[arg(long = "repo", required = true)]
    pub repos: Vec<String>,
    /// Only these severities (critical, high, medium, low), repeatable.
    #[arg(long)]
    pub severity: Vec<String>,
}

pub async fn run(args: MonitorArgs, output: Output) -> anyhow::Result<ExitCode> {
    let token = std::env::var("GITHUB_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!("GITHUB_TOKEN is required (a token that may read security alerts)")
        })?;
    let base = std::env::var("GITHUB_API_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let client = GithubClient::new(&token, base.as_deref())?;
    let progress = Progress::spinner(
        output,
        &format!("scanning {} repositories", args.repos.len()),
    );
    let report = findings::monitor(&client, &args.repos, &args.severity).await;
    progress.finish();
    for n in &report.not_enabled {
        eprintln!("note: {} {}: not enabled ({})", n.repo, n.source, n.message);
    }
    for e in &report.errors {
        eprintln!("error: {} {}: {}", e.repo, e.source, e.message);
    }
    if output.is_json() {
        // go-infra's shape: the findings array.
        print_json(&report.findings)?;
    } else {
        print!("{}", render(&report, None));
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn render(report: &MonitorReport, width: Option<u16>) -> String {
    if report.findings.is_empty() {
        return "No open security findings\n".into();
    }
    let mut counts = Vec::new();
    for sev in ["critical", "high", "medium", "low"] {
        let n = report.findings.iter().filter(|f| f.severity == sev).count();
        if n > 0 {
            counts.push(format!("{n} {sev}"));
        }
    }
    let mut t = table(
        &["SEVERITY", "SOURCE", "REPO", "RULE", "LOCATION", "MESSAGE"],
        width,
    );
    for f in &report.findings {
        let location = match (f.file.as_str(), f.line) {
            ("", _) => String::new(),
            (file, 0) => file.to_string(),
            (file, line) => format!("{file}:{line}"),
        };
        t.add_row(vec![
            f.severity.clone(),
            f.source.clone(),
            f.repo.clone(),
            f.rule.clone(),
            location,
            f.message.clone(),
        ]);
    }
    format!("Found: {}\n{t}\n", counts.join(", "))
}

#[cfg(test)]
mod tests {
    use muster_infra::findings::Finding;

    use super::*;

    #[test]
    fn findings_read_as_one_table_with_counts() {
        let f = |severity: &str, source: &str, rule: &str, file: &str, line: u64, message: &str| {
            Finding {
                source: source.into(),
                severity: severity.into(),
                rule: rule.into(),
                file: file.into(),
                line,
                message: message.into(),
                url: String::new(),
                state: "open".into(),
                repo: "acme/shop".into(),
                created_at: "2026-01-05T10:00:00Z".into(),
            }
        };
        let report = MonitorReport {
            findings: vec![
                f(
                    "critical",
                    "secret-scanning",
                    "github_personal_access_token",
                    "config/deploy.env",
                    3,
                    "Exposed GitHub Personal Access Token detected (active)",
                ),
                f(
                    "high",
                    "semgrep",
                    "sql-injection",
                    "src/db.rs",
                    42,
                    "sql-injection at src/db.rs:42",
                ),
                f(
                    "low",
                    "dependabot",
                    "GHSA-mock-0001-xxxx",
                    "Cargo.lock",
                    0,
                    "crate1: crate1 is vulnerable",
                ),
            ],
            ..MonitorReport::default()
        };
        insta::assert_snapshot!(render(&report, Some(110)));
        assert_eq!(
            render(&MonitorReport::default(), None),
            "No open security findings\n"
        );
    }
}
