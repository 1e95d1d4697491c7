//! The health history chart, drawn on the server as SVG: one bar per run (height: response
//! time, colour: outcome), oldest on the left. Only numbers and fixed words go into it.

use std::fmt::Write;

use muster_domain::health::Outcome;
use muster_store::HealthRecord;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 20.0;

fn colour(o: Outcome) -> &'static str {
    match o {
        Outcome::Passing => "green",
        Outcome::Degraded => "yellow",
        Outcome::Failing => "red",
    }
}

/// The chart of `runs` (newest first, as the store answers them).
pub fn latency_chart(runs: &[HealthRecord]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">Response time of the last {} runs</title>"#,
        runs.len()
    );
    if runs.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" class="muted">No runs yet</text></svg>"#,
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return svg;
    }
    let max = runs
        .iter()
        .filter_map(|r| r.response_time_ms)
        .fold(1.0_f64, f64::max);
    let plot = HEIGHT - TOP - BOTTOM;
    let step = WIDTH / runs.len() as f64;
    let bar = (step * 0.8).clamp(1.0, 24.0);
    for (i, run) in runs.iter().rev().enumerate() {
        let x = i as f64 * step + (step - bar) / 2.0;
        // A failed run without a time gets a full-height bar, so it stands out.
        let h = match (run.outcome, run.response_time_ms) {
            (_, Some(ms)) => (ms / max * plot).max(2.0),
            (Outcome::Failing, None) => plot,
            _ => 2.0,
        };
        let y = TOP + plot - h;
        let ms = run
            .response_time_ms
            .map_or_else(|| "no answer".to_string(), |ms| format!("{ms:.1} ms"));
        let _ = write!(
            svg,
            r#"<rect class="bar {}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"><title>{} {}: {}</title></rect>"#,
            colour(run.outcome),
            run.checked_at.format("%Y-%m-%d %H:%M:%SZ"),
            run.outcome.as_str(),
            ms
        );
    }
    let _ = write!(
        svg,
        r#"<text x="2" y="12" class="axis">{max:.0} ms</text><text x="2" y="{}" class="axis">oldest</text><text x="{}" y="{}" text-anchor="end" class="axis">newest</text></svg>"#,
        HEIGHT - 4.0,
        WIDTH - 2.0,
        HEIGHT - 4.0
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn run(outcome: Outcome, ms: Option<f64>) -> HealthRecord {
        HealthRecord {
            asset_id: "a".into(),
            checked_at: Utc::now(),
            outcome,
            response_time_ms: ms,
            error: None,
            result: None,
        }
    }

    #[test]
    fn one_bar_per_run_coloured_by_outcome() {
        let svg = latency_chart(&[
            run(Outcome::Failing, None),
            run(Outcome::Passing, Some(10.0)),
            run(Outcome::Degraded, Some(40.0)),
        ]);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("bar red") && svg.contains("bar green") && svg.contains("bar yellow"));
        assert!(svg.contains("40 ms"));
        assert!(latency_chart(&[]).contains("No runs yet"));
    }
}
