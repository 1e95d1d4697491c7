//! How commands print: tables that fit the terminal, `--output json` for scripts, and progress
//! on a terminal only.

use std::io::IsTerminal;
use std::time::Duration;

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
use serde::Serialize;

/// `--output`: what a command prints on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables and lines for people.
    #[default]
    Table,
    /// One JSON document (or one per line for `events tail`).
    Json,
}

impl Output {
    pub fn is_json(self) -> bool {
        self == Output::Json
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table with `header`, as wide as the terminal when stdout is one (content wraps), else
/// unbounded; `width` fixes it (for snapshots).
pub fn table(header: &[&str], width: Option<u16>) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    if let Some(w) = width {
        t.set_width(w);
    } else if !std::io::stdout().is_terminal() {
        t.set_content_arrangement(ContentArrangement::Disabled);
    }
    t
}

/// A spinner or bar on stderr, shown only when stderr is a terminal and the output is for
/// people; otherwise every call does nothing.
pub struct Progress(indicatif::ProgressBar);

impl Progress {
    pub fn spinner(output: Output, message: &str) -> Self {
        let bar = if output.is_json() || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(100));
            b
        };
        bar.set_message(message.to_string());
        Progress(bar)
    }

    pub fn bar(output: Output, len: u64, message: &str) -> Self {
        let p = Self::spinner(output, message);
        if !p.0.is_hidden() {
            p.0.set_length(len);
            p.0.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{bar:30}]")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
        }
        p
    }

    pub fn message(&self, message: &str) {
        self.0.set_message(message.to_string());
    }

    pub fn inc(&self) {
        self.0.inc(1);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
