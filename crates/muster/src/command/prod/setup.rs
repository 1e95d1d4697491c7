//! `muster prod setup`: discover → lb → dns, or one step; `--dry-run` prints the plan only.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use muster_infra::setup::{self, Clients, SetupOptions, SetupReport, Step};

use crate::output::{Output, Progress, print_json, table};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StepArg {
    Discover,
    Lb,
    Dns,
}

impl From<StepArg> for Step {
    fn from(s: StepArg) -> Step {
        match s {
            StepArg::Discover => Step::Discover,
            StepArg::Lb => Step::Lb,
            StepArg::Dns => Step::Dns,
        }
    }
}

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Print what would be created, changed and left alone; send no change.
    #[arg(long)]
    pub dry_run: bool,
    /// Run one step only.
    #[arg(long, value_enum)]
    pub step: Option<StepArg>,
}

pub async fn run(
    config: Option<PathBuf>,
    args: SetupArgs,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (config, path) = super::load_config(config.as_ref())?;
    let clients = Clients {
        hcloud: super::hcloud()?,
        robot: super::robot()?,
        cloudns: super::cloudns()?,
    };
    let options = SetupOptions {
        dry_run: args.dry_run,
        step: args.step.map(Step::from),
    };
    let progress = Progress::spinner(output, "setting up");
    let report = setup::run(&config, &clients, options, &|m| progress.message(m)).await;
    progress.finish();
    if output.is_json() {
        print_json(&report)?;
    } else {
        println!(
            "Production setup from {}{}",
            path.display(),
            if report.dry_run { " (dry run)" } else { "" }
        );
        print!("{}", render(&report, None));
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The report for people: a table per step, notes, errors and the totals.
pub fn render(report: &SetupReport, width: Option<u16>) -> String {
    let mut out = String::new();
    for step in &report.steps {
        out.push_str(&format!("\n== {}\n", step.step.as_str()));
        for n in &step.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        if !step.items.is_empty() {
            let mut t = table(&["ACTION", "OBJECT", "NAME", "DETAIL"], width);
            for i in &step.items {
                let action = if report.dry_run && i.action.is_change() {
                    format!("would {}", i.action.as_str())
                } else {
                    i.action.as_str().to_string()
                };
                t.add_row(vec![
                    action,
                    i.object.to_string(),
                    i.name.clone(),
                    i.detail.clone(),
                ]);
            }
            out.push_str(&format!("{t}\n"));
        }
        if let Some(e) = &step.error {
            out.push_str(&format!("  error: {e}\n"));
        }
    }
    let (changes, alone) = report.counts();
    out.push_str(&match (report.dry_run, report.failed()) {
        (_, true) => {
            format!("\nSetup stopped: {changes} changes, {alone} left alone before the failure\n")
        }
        (true, false) => format!(
            "\nDry run: {changes} changes would be made, {alone} left alone; nothing was sent\n"
        ),
        (false, false) => format!("\nSetup complete: {changes} changes made, {alone} left alone\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use muster_infra::setup::{Action, PlanItem, StepReport};

    use super::*;

    fn item(action: Action, object: &'static str, name: &str, detail: &str) -> PlanItem {
        PlanItem {
            action,
            object,
            name: name.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn a_dry_run_plan_reads_as_a_table_per_step() {
        let report = SetupReport {
            dry_run: true,
            steps: vec![
                StepReport {
                    step: Step::Lb,
                    items: vec![item(
                        Action::Create,
                        "load_balancer",
                        "hermes",
                        "lb11 in fsn1, 2 services, 3 targets",
                    )],
                    notes: vec![],
                    error: None,
                },
                StepReport {
                    step: Step::Dns,
                    items: vec![
                        item(
                            Action::Update,
                            "record",
                            "A example.com",
                            "203.0.113.1, ttl 3600 -> 300",
                        ),
                        item(
                            Action::Unchanged,
                            "record",
                            "MX example.com",
                            "10 mail.example.com (ttl 3600)",
                        ),
                        item(
                            Action::Pending,
                            "record",
                            "A hermes.lb.example.com",
                            "{{.lb_ip}} (waits for the load balancer's address, once it is created)",
                        ),
                    ],
                    notes: vec!["HETZNER_ROBOT_USER/HETZNER_ROBOT_PASS are not set".into()],
                    error: None,
                },
            ],
        };
        insta::assert_snapshot!(render(&report, Some(100)));
    }
}
