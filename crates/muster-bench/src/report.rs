//! The run's figures: one serializable report, printed as Markdown tables or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::load::Outcome;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One measured loop.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub asked: u64,
    pub ok: u64,
    pub errors: u64,
    pub concurrency: usize,
    pub seconds: f64,
    pub rate_per_s: f64,
    pub latency: Latency,
    /// CPU seconds the `muster serve` process used during the loop (not PostgreSQL's).
    pub muster_cpu_s: Option<f64>,
    /// CPU seconds this tool used during the loop.
    pub bench_cpu_s: Option<f64>,
    pub cut_short: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Phase {
    pub fn new(
        o: &Outcome,
        asked: u64,
        concurrency: usize,
        muster_cpu: Option<Duration>,
        bench_cpu: Option<Duration>,
    ) -> Phase {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &o.latency;
        let empty = h.is_empty();
        Phase {
            asked,
            ok: o.ok,
            errors: o.errors,
            concurrency,
            seconds: o.elapsed.as_secs_f64(),
            rate_per_s: o.rate(),
            latency: Latency {
                p50_ms: if empty {
                    0.0
                } else {
                    ms(h.value_at_quantile(0.50))
                },
                p90_ms: if empty {
                    0.0
                } else {
                    ms(h.value_at_quantile(0.90))
                },
                p99_ms: if empty {
                    0.0
                } else {
                    ms(h.value_at_quantile(0.99))
                },
                max_ms: if empty { 0.0 } else { ms(h.max()) },
                mean_ms: if empty { 0.0 } else { h.mean() / 1000.0 },
            },
            muster_cpu_s: muster_cpu.map(|d| d.as_secs_f64()),
            bench_cpu_s: bench_cpu.map(|d| d.as_secs_f64()),
            cut_short: o.cut_short,
            first_error: o.first_error.clone(),
        }
    }
}

/// One list query at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ListResult {
    pub key: String,
    pub query: String,
    /// `meta.total` of the answer: how many assets match.
    pub total: u64,
    /// Assets on the measured page.
    pub items: usize,
    #[serde(flatten)]
    pub phase: Phase,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backend: String,
    pub muster_bin: String,
    pub started_unix: u64,
    pub seconds: f64,
    pub creates: Option<Phase>,
    /// The top-up creates that brought the database to `assets_total`.
    pub seed: Option<Phase>,
    pub seed_from: u64,
    pub assets_total: u64,
    pub list: Vec<ListResult>,
    /// What was skipped or cut, in words.
    pub notes: Vec<String>,
}

impl Report {
    /// Requests that failed in any loop.
    pub fn errors(&self) -> u64 {
        self.creates
            .iter()
            .chain(&self.seed)
            .map(|p| p.errors)
            .sum::<u64>()
            + self.list.iter().map(|l| l.phase.errors).sum::<u64>()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## muster-bench: {} ({} assets at the end, {:.0} s)\n",
            self.backend, self.assets_total, self.seconds
        );
        let cpu = |c: Option<f64>, p: &Phase| match c {
            Some(c) => format!("{:.0}%", 100.0 * c / p.seconds.max(1e-9)),
            None => "-".into(),
        };
        let lat = |p: &Phase| {
            format!(
                "{:.2} | {:.2} | {:.2} | {:.2}",
                p.latency.p50_ms, p.latency.p90_ms, p.latency.p99_ms, p.latency.max_ms
            )
        };
        let done = |p: &Phase| {
            let mark = if p.cut_short { " (cut short)" } else { "" };
            format!("{}/{}{mark}", p.ok, p.asked)
        };
        if self.creates.is_some() || self.seed.is_some() {
            s.push_str("| creates | conc | ok/asked | creates/s | p50 ms | p90 ms | p99 ms | max ms | errors | muster CPU | bench CPU |\n");
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            let rows = [("creates", &self.creates), ("seed top-up", &self.seed)];
            for (name, p) in rows {
                let Some(p) = p else { continue };
                let name = if name == "seed top-up" {
                    format!(
                        "seed top-up ({} → {})",
                        self.seed_from,
                        self.seed_from + p.ok
                    )
                } else {
                    name.to_string()
                };
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {:.0} | {} | {} | {} | {} |",
                    p.concurrency,
                    done(p),
                    p.rate_per_s,
                    lat(p),
                    p.errors,
                    cpu(p.muster_cpu_s, p),
                    cpu(p.bench_cpu_s, p),
                );
            }
            s.push('\n');
        }
        if !self.list.is_empty() {
            s.push_str("| list query (per_page=50) | conc | ok/asked | req/s | p50 ms | p90 ms | p99 ms | max ms | total (page items) | errors | muster CPU | bench CPU |\n");
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for l in &self.list {
                let p = &l.phase;
                let _ = writeln!(
                    s,
                    "| ({}) `{}` | {} | {} | {:.0} | {} | {} ({}) | {} | {} | {} |",
                    l.key,
                    l.query,
                    p.concurrency,
                    done(p),
                    p.rate_per_s,
                    lat(p),
                    l.total,
                    l.items,
                    p.errors,
                    cpu(p.muster_cpu_s, p),
                    cpu(p.bench_cpu_s, p),
                );
            }
            s.push('\n');
        }
        s.push_str("CPU columns: share of one core over the loop's wall time (2 cores = 200%); muster CPU is the `muster serve` process only (not PostgreSQL).\n");
        for n in &self.notes {
            let _ = writeln!(s, "\n- {n}");
        }
        for (name, p) in [("creates", &self.creates), ("seed", &self.seed)] {
            if let Some(e) = p.as_ref().and_then(|p| p.first_error.as_ref()) {
                let _ = writeln!(s, "\n- first {name} error: {e}");
            }
        }
        for l in &self.list {
            if let Some(e) = &l.phase.first_error {
                let _ = writeln!(
                    s,
                    "\n- first error of ({}) c={}: {e}",
                    l.key, l.phase.concurrency
                );
            }
        }
        s
    }
}
