//! A reader for the Prometheus text exposition of `/metrics`, and quantiles from the delta of a
//! histogram's cumulative buckets between two scrapes.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Every sample of a scrape (comments and malformed lines are skipped).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text.lines().filter_map(parse_line).collect();
        Scrape { samples }
    }

    /// The value of `name` whose labels include every pair of `want`; summed if several.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.matching(name, want) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        want: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// Cumulative buckets `(le, count)` of histogram `base` (`base_bucket`), sorted by `le`.
    pub fn buckets(&self, base: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
        let name = format!("{base}_bucket");
        let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for s in self.matching(&name, want) {
            let Some(le) = s.labels.get("le").and_then(|l| parse_float(l)) else {
                continue;
            };
            let e = by_le.entry(sortable(le)).or_insert((le, 0.0));
            e.1 += s.value;
        }
        by_le.into_values().collect()
    }
}

/// A float's bits arranged so that integer order is numeric order (for positive floats and +Inf,
/// which is all `le` holds).
fn sortable(x: f64) -> u64 {
    let b = x.to_bits();
    if x.is_sign_negative() {
        !b
    } else {
        b | (1 << 63)
    }
}

fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(char::is_whitespace)?;
            (&line[..sp], BTreeMap::new(), &line[sp..])
        }
    };
    let value = parse_float(rest.split_whitespace().next()?)?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values may hold escaped quotes and commas).
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_string(), value);
    }
}

/// The delta of cumulative buckets between two scrapes (same `le`s), bucket by bucket.
pub fn bucket_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|(le, n)| {
            let prev = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, p)| *p);
            (*le, (n - prev).max(0.0))
        })
        .collect()
}

/// The smallest bucket upper bound `le` whose cumulative count reaches `q` of the total (the
/// `+Inf` bucket's count): an upper bound of the `q` quantile, not an interpolation. `None`
/// when there are no observations.
pub fn quantile_upper_bound(cumulative: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let need = q * total;
    cumulative
        .iter()
        .find(|(_, n)| *n >= need - 1e-9)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP muster_health_schedule_lag_seconds lag
# TYPE muster_health_schedule_lag_seconds histogram
muster_health_schedule_lag_seconds_sum 1.5
muster_health_schedule_lag_seconds_count 10
muster_health_schedule_lag_seconds_bucket{le="0.001"} 2
muster_health_schedule_lag_seconds_bucket{le="0.01"} 9
muster_health_schedule_lag_seconds_bucket{le="+Inf"} 10
muster_health_checks_total{outcome="passing"} 7
muster_health_checks_total{outcome="failing"} 3
muster_http_requests_total{method="POST",route="/api/register",status="200"} 5
# EOF
"#;

    #[test]
    fn reads_samples_and_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(
            s.value("muster_health_schedule_lag_seconds_count", &[]),
            Some(10.0)
        );
        assert_eq!(
            s.value("muster_health_checks_total", &[("outcome", "passing")]),
            Some(7.0)
        );
        assert_eq!(s.value("muster_health_checks_total", &[]), Some(10.0));
        assert_eq!(
            s.value(
                "muster_http_requests_total",
                &[("route", "/api/register"), ("status", "200")]
            ),
            Some(5.0)
        );
    }

    #[test]
    fn quantiles_are_bucket_bounds_of_the_delta() {
        let after = Scrape::parse(TEXT).buckets("muster_health_schedule_lag_seconds", &[]);
        assert_eq!(after.len(), 3);
        let before = vec![(0.001, 1.0), (0.01, 1.0), (f64::INFINITY, 1.0)];
        let d = bucket_delta(&before, &after);
        assert_eq!(d, vec![(0.001, 1.0), (0.01, 8.0), (f64::INFINITY, 9.0)]);
        assert_eq!(quantile_upper_bound(&d, 0.5), Some(0.01));
        assert_eq!(quantile_upper_bound(&d, 0.1), Some(0.001));
        assert_eq!(quantile_upper_bound(&d, 0.99), Some(f64::INFINITY));
        assert_eq!(quantile_upper_bound(&[(1.0, 0.0)], 0.5), None);
    }

    #[test]
    fn escaped_label_values() {
        let s = Scrape::parse(r#"m{a="x\"y,z",b="2"} 3"#);
        assert_eq!(s.samples[0].labels["a"], "x\"y,z");
        assert_eq!(s.value("m", &[("b", "2")]), Some(3.0));
    }
}
