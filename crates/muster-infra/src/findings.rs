//! `monitor`: a repository's code scanning, Dependabot and secret scanning alerts as go-infra's
//! findings (`source`, `severity`, `rule`, `file`, `line`, `message`, `url`, `state`, `repo`,
//! `created_at`), critical first.
//!
//! Severity: code scanning uses the rule's `security_severity_level` when it has one (what
//! GitHub's Security tab shows) and maps the tool's level otherwise (`error` high, `warning`
//! medium, `note` low, as go-infra did); Dependabot the advisory's; a secret is always critical.
//! A secret alert's secret is never read, so it cannot be shown.

use std::cmp::Ordering;

use muster_providers::github::{
    AlertKind, Alerts, CodeScanningAlert, DependabotAlert, GithubClient, SecretScanningAlert,
};
use serde::Serialize;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The tool (`semgrep`, `CodeQL`, …), `dependabot` or `secret-scanning`.
    pub source: String,
    /// `critical`, `high`, `medium`, `low`.
    pub severity: String,
    /// Rule id, CVE (else GHSA) or secret type.
    pub rule: String,
    pub file: String,
    /// 0 when there is none.
    pub line: u64,
    pub message: String,
    pub url: String,
    pub state: String,
    /// `owner/name`.
    pub repo: String,
    pub created_at: String,
}

/// go-infra's four levels from any of GitHub's spellings (unknown ones count as medium).
pub fn normalize_severity(s: &str) -> &'static str {
    match s.to_ascii_lowercase().as_str() {
        "critical" | "crit" => "critical",
        "high" | "error" => "high",
        "medium" | "moderate" | "warning" => "medium",
        "low" | "info" | "note" | "none" => "low",
        _ => "medium",
    }
}

fn rank(severity: &str) -> u8 {
    match severity {
        "critical" => 0,
        "high" => 1,
        "medium" => 2,
        _ => 3,
    }
}

/// Critical first, then by repository, source and rule.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        rank(&a.severity)
            .cmp(&rank(&b.severity))
            .then_with(|| a.repo.cmp(&b.repo))
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.rule.cmp(&b.rule))
            .then_with(|| a.file.cmp(&b.file))
            .then(Ordering::Equal)
    });
}

pub fn from_code_scanning(repo: &str, a: &CodeScanningAlert) -> Finding {
    let severity = a
        .rule
        .security_severity_level
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&a.rule.severity);
    let message = if a.most_recent_instance.message.text.is_empty() {
        a.rule.description.clone()
    } else {
        a.most_recent_instance.message.text.clone()
    };
    Finding {
        source: if a.tool.name.is_empty() {
            AlertKind::CodeScanning.name().into()
        } else {
            a.tool.name.clone()
        },
        severity: normalize_severity(severity).into(),
        rule: a.rule.id.clone(),
        file: a.most_recent_instance.location.path.clone(),
        line: a.most_recent_instance.location.start_line.unwrap_or(0),
        message,
        url: a.html_url.clone(),
        state: a.state.clone(),
        repo: repo.into(),
        created_at: a.created_at.clone(),
    }
}

pub fn from_dependabot(repo: &str, a: &DependabotAlert) -> Finding {
    let severity = if a.security_advisory.severity.is_empty() {
        &a.security_vulnerability.severity
    } else {
        &a.security_advisory.severity
    };
    let package = if a.dependency.package.name.is_empty() {
        &a.security_vulnerability.package.name
    } else {
        &a.dependency.package.name
    };
    Finding {
        source: AlertKind::Dependabot.name().into(),
        severity: normalize_severity(severity).into(),
        rule: a
            .security_advisory
            .cve_id
            .clone()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| a.security_advisory.ghsa_id.clone()),
        file: a.dependency.manifest_path.clone(),
        line: 0,
        message: format!("{package}: {}", a.security_advisory.summary),
        url: a.html_url.clone(),
        state: a.state.clone(),
        repo: repo.into(),
        created_at: a.created_at.clone(),
    }
}

pub fn from_secret_scanning(repo: &str, a: &SecretScanningAlert) -> Finding {
    let what = if a.secret_type_display_name.is_empty() {
        &a.secret_type
    } else {
        &a.secret_type_display_name
    };
    let location = a.first_location_detected.clone().unwrap_or_default();
    let validity = match a.validity.as_str() {
        "" | "unknown" => String::new(),
        v => format!(" ({v})"),
    };
    Finding {
        source: AlertKind::SecretScanning.name().into(),
        severity: "critical".into(),
        rule: a.secret_type.clone(),
        file: location.path,
        line: location.start_line.unwrap_or(0),
        message: format!("Exposed {what} detected{validity}"),
        url: a.html_url.clone(),
        state: a.state.clone(),
        repo: repo.into(),
        created_at: a.created_at.clone(),
    }
}

/// A list that could not be read, or a feature that is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceNote {
    pub repo: String,
    pub source: &'static str,
    pub message: String,
}

/// Everything `monitor` gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonitorReport {
    pub findings: Vec<Finding>,
    /// Features switched off (not an error: nothing to report there).
    pub not_enabled: Vec<SourceNote>,
    /// Lists that failed; the findings are then incomplete.
    pub errors: Vec<SourceNote>,
}

/// Reads the three lists of each repository (all at once), keeps `severities` (all when
/// empty), sorts critical first.
pub async fn monitor(
    client: &GithubClient,
    repos: &[String],
    severities: &[String],
) -> MonitorReport {
    let mut report = MonitorReport::default();
    let calls = repos.iter().map(|repo| async move {
        let (code, dependabot, secrets) = tokio::join!(
            client.code_scanning_alerts(repo),
            client.dependabot_alerts(repo),
            client.secret_scanning_alerts(repo)
        );
        (repo, code, dependabot, secrets)
    });
    for (repo, code, dependabot, secrets) in futures::future::join_all(calls).await {
        gather(
            &mut report,
            repo,
            AlertKind::CodeScanning,
            code,
            from_code_scanning,
        );
        gather(
            &mut report,
            repo,
            AlertKind::Dependabot,
            dependabot,
            from_dependabot,
        );
        gather(
            &mut report,
            repo,
            AlertKind::SecretScanning,
            secrets,
            from_secret_scanning,
        );
    }
    if !severities.is_empty() {
        let wanted: Vec<&str> = severities.iter().map(|s| normalize_severity(s)).collect();
        report
            .findings
            .retain(|f| wanted.contains(&f.severity.as_str()));
    }
    sort(&mut report.findings);
    report
}

fn gather<T>(
    report: &mut MonitorReport,
    repo: &str,
    kind: AlertKind,
    answer: Result<Alerts<T>, muster_providers::ProviderError>,
    to_finding: fn(&str, &T) -> Finding,
) {
    match answer {
        Ok(Alerts::Found(alerts)) => report.findings.extend(
            alerts
                .iter()
                .map(|a| to_finding(repo, a))
                .filter(|f| f.state == "open"),
        ),
        Ok(Alerts::NotEnabled(message)) => report.not_enabled.push(SourceNote {
            repo: repo.into(),
            source: kind.name(),
            message,
        }),
        Err(e) => report.errors.push(SourceNote {
            repo: repo.into(),
            source: kind.name(),
            message: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_normalise_and_sort_critical_first() {
        assert_eq!(normalize_severity("ERROR"), "high");
        assert_eq!(normalize_severity("moderate"), "medium");
        assert_eq!(normalize_severity("note"), "low");
        assert_eq!(normalize_severity("whatever"), "medium");
        let f = |sev: &str, repo: &str| Finding {
            source: "s".into(),
            severity: sev.into(),
            rule: "r".into(),
            file: String::new(),
            line: 0,
            message: String::new(),
            url: String::new(),
            state: "open".into(),
            repo: repo.into(),
            created_at: String::new(),
        };
        let mut all = vec![
            f("low", "a/a"),
            f("critical", "b/b"),
            f("medium", "a/a"),
            f("critical", "a/a"),
            f("high", "c/c"),
        ];
        sort(&mut all);
        let got: Vec<(&str, &str)> = all
            .iter()
            .map(|x| (x.severity.as_str(), x.repo.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("critical", "a/a"),
                ("critical", "b/b"),
                ("high", "c/c"),
                ("medium", "a/a"),
                ("low", "a/a")
            ]
        );
    }

    #[test]
    fn the_security_level_wins_over_the_tools_level() {
        let mut a = CodeScanningAlert::default();
        a.rule.severity = "warning".into();
        a.rule.security_severity_level = Some("critical".into());
        a.rule.description = "desc".into();
        assert_eq!(from_code_scanning("o/r", &a).severity, "critical");
        a.rule.security_severity_level = None;
        let f = from_code_scanning("o/r", &a);
        assert_eq!(
            (f.severity.as_str(), f.message.as_str(), f.source.as_str()),
            ("medium", "desc", "code-scanning")
        );
        let mut d = DependabotAlert::default();
        d.security_advisory.ghsa_id = "GHSA-1".into();
        d.security_advisory.severity = "high".into();
        assert_eq!(
            from_dependabot("o/r", &d).rule,
            "GHSA-1",
            "no CVE: the GHSA id"
        );
    }
}
