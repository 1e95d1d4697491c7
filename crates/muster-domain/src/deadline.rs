//! Deadline checks: "expect an event of type T for this asset (or organization) by 05:00
//! Europe/Budapest every day", or "every N hours, with a grace period". The hub's backup
//! deadline checker, generalised the way Healthchecks.io's cron checks are.
//!
//! Time is cut into periods, each ending at a deadline. A period without a matching event is
//! missed once: the checker raises `expected_<type>_missed` for it and moves on.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value;

use crate::input::ObjectReader;
use crate::notify::is_event_type;
use crate::validation::FieldErrors;

/// Most periods evaluated in one check after a long pause; older ones are passed over.
pub const MAX_CATCH_UP: usize = 31;
/// Longest interval of an `every_hours` check: 31 days.
pub const MAX_EVERY_HOURS: u32 = 744;

/// When the expected event is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every day by `at` local time in `time_zone`; the period is the 24 hours (23 or 25
    /// across a daylight-saving change) before it.
    Daily { at: NaiveTime, time_zone: Tz },
    /// Every `hours` hours from the check's creation; the period's event may come up to
    /// `grace_minutes` late.
    Every { hours: u32, grace_minutes: u32 },
}

/// One period: an event in `[start, deadline)` meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
}

/// A deadline check.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadline {
    pub id: String,
    pub organization_id: String,
    /// The asset whose events count (its own and its agent's); none: any event of the
    /// organization.
    pub asset_id: Option<String>,
    /// The expected event type, e.g. `backup_completed`.
    pub event_type: String,
    pub schedule: Schedule,
    pub enabled: bool,
    /// The deadline of the last period checked; none before the first.
    pub checked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a client writes.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadlineSpec {
    pub organization_id: String,
    pub asset_id: Option<String>,
    pub event_type: String,
    pub schedule: Schedule,
    pub enabled: bool,
}

impl DeadlineSpec {
    /// Reads `{"organization_id", "asset_id", "event_type", "enabled"}` with either `{"at":
    /// "HH:MM", "time_zone": "Europe/Budapest"}` or `{"every_hours", "grace_minutes"}`.
    pub fn read(body: Value) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::default();
        let mut spec = None;
        if let Some(mut r) = ObjectReader::new(body, &mut errors) {
            r.ignore(&[
                "id",
                "missed_event_type",
                "checked_until",
                "created_at",
                "updated_at",
            ]);
            let organization_id: Option<String> = r.required("organization_id");
            let asset_id: Option<String> = r.optional("asset_id");
            let event_type: Option<String> = r.required("event_type");
            let enabled: Option<bool> = r.optional("enabled");
            let at: Option<String> = r.optional("at");
            let time_zone: Option<String> = r.optional("time_zone");
            let every: Option<i64> = r.optional("every_hours");
            let grace: Option<i64> = r.optional("grace_minutes");
            r.finish();
            let event_type = event_type.unwrap_or_default();
            if !event_type.is_empty() && !is_event_type(&event_type) {
                errors.add(
                    "event_type",
                    "lowercase letters, digits, `_` and `.`, at most 100",
                );
            }
            let schedule = match (at, every) {
                (Some(at), None) => {
                    if grace.is_some() {
                        errors.add("grace_minutes", "goes with `every_hours`, not `at`");
                    }
                    let at = NaiveTime::parse_from_str(&at, "%H:%M").ok().or_else(|| {
                        errors.add("at", "must be HH:MM (24-hour)");
                        None
                    });
                    let tz = match time_zone.as_deref().unwrap_or("UTC").parse::<Tz>() {
                        Ok(tz) => Some(tz),
                        Err(_) => {
                            errors.add("time_zone", "must be an IANA time zone (Europe/Budapest)");
                            None
                        }
                    };
                    at.zip(tz)
                        .map(|(at, time_zone)| Schedule::Daily { at, time_zone })
                }
                (None, Some(hours)) => {
                    if time_zone.is_some() {
                        errors.add("time_zone", "goes with `at`, not `every_hours`");
                    }
                    let grace = grace.unwrap_or(0);
                    let hours_ok = (1..=i64::from(MAX_EVERY_HOURS)).contains(&hours);
                    if !hours_ok {
                        errors.add(
                            "every_hours",
                            format!("must be between 1 and {MAX_EVERY_HOURS}"),
                        );
                    }
                    let grace_ok =
                        (0..=hours.clamp(1, i64::from(MAX_EVERY_HOURS)) * 60).contains(&grace);
                    if !grace_ok {
                        errors.add("grace_minutes", "must be between 0 and the interval");
                    }
                    (hours_ok && grace_ok).then_some(Schedule::Every {
                        hours: hours as u32,
                        grace_minutes: grace as u32,
                    })
                }
                (Some(_), Some(_)) => {
                    errors.add("every_hours", "give either `at` or `every_hours`, not both");
                    None
                }
                (None, None) => {
                    errors.add("at", "give `at` (daily) or `every_hours`");
                    None
                }
            };
            if let (Some(organization_id), Some(schedule)) = (organization_id, schedule) {
                spec = Some(DeadlineSpec {
                    organization_id,
                    asset_id,
                    event_type,
                    schedule,
                    enabled: enabled.unwrap_or(true),
                });
            }
        }
        match spec {
            Some(s) => errors.finish(s),
            None => Err(errors),
        }
    }
}

impl Deadline {
    /// The event type a miss raises: `expected_<type>_missed`.
    pub fn missed_event_type(&self) -> String {
        format!("expected_{}_missed", self.event_type)
    }

    /// Periods whose deadline passed after the last check (or the creation) and by `now`,
    /// oldest first; at most [`MAX_CATCH_UP`], the newest ones.
    pub fn due_periods(&self, now: DateTime<Utc>) -> Vec<Period> {
        let from = self.checked_until.unwrap_or(self.created_at);
        let mut out = Vec::new();
        let mut next = self.period_after(from);
        while let Some(p) = next {
            if p.deadline > now {
                break;
            }
            out.push(p);
            next = self.period_after(p.deadline);
        }
        let skip = out.len().saturating_sub(MAX_CATCH_UP);
        out.split_off(skip)
    }

    /// The first period whose deadline is after `t`.
    pub fn period_after(&self, t: DateTime<Utc>) -> Option<Period> {
        match &self.schedule {
            Schedule::Daily { at, time_zone } => {
                let mut day = t.with_timezone(time_zone).date_naive();
                let mut deadline = local(time_zone, day, *at)?;
                while deadline <= t {
                    day = day.succ_opt()?;
                    deadline = local(time_zone, day, *at)?;
                }
                let start = local(time_zone, day.pred_opt()?, *at)?;
                Some(Period { start, deadline })
            }
            Schedule::Every {
                hours,
                grace_minutes,
            } => {
                let step = Duration::hours(i64::from(*hours));
                let grace = Duration::minutes(i64::from(*grace_minutes));
                // Period k: [created + k·step, created + (k+1)·step + grace).
                let since = t - self.created_at - grace;
                let k = if since < step {
                    0
                } else {
                    since.num_seconds() / step.num_seconds()
                };
                let mut start = self.created_at + step * k as i32;
                while start + step + grace <= t {
                    start += step;
                }
                Some(Period {
                    start,
                    deadline: start + step + grace,
                })
            }
        }
    }
}

/// `day` at `at` in `tz`, in UTC: the earlier of an ambiguous time, an hour later in a gap.
fn local(tz: &Tz, day: chrono::NaiveDate, at: NaiveTime) -> Option<DateTime<Utc>> {
    let naive = day.and_time(at);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// The JSON a deadline is answered as.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadlineView {
    pub id: String,
    pub organization_id: String,
    pub asset_id: Option<String>,
    pub event_type: String,
    /// What a miss raises.
    pub missed_event_type: String,
    /// `HH:MM`, for daily checks.
    pub at: Option<String>,
    pub time_zone: Option<String>,
    pub every_hours: Option<u32>,
    pub grace_minutes: Option<u32>,
    pub enabled: bool,
    pub checked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Deadline> for DeadlineView {
    fn from(d: &Deadline) -> Self {
        let (at, time_zone, every_hours, grace_minutes) = match &d.schedule {
            Schedule::Daily { at, time_zone } => (
                Some(at.format("%H:%M").to_string()),
                Some(time_zone.name().to_string()),
                None,
                None,
            ),
            Schedule::Every {
                hours,
                grace_minutes,
            } => (None, None, Some(*hours), Some(*grace_minutes)),
        };
        Self {
            id: d.id.clone(),
            organization_id: d.organization_id.clone(),
            asset_id: d.asset_id.clone(),
            event_type: d.event_type.clone(),
            missed_event_type: d.missed_event_type(),
            at,
            time_zone,
            every_hours,
            grace_minutes,
            enabled: d.enabled,
            checked_until: d.checked_until,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily(hhmm: &str, tz: &str, created: &str) -> Deadline {
        let spec = DeadlineSpec::read(
            json!({"organization_id": "o", "event_type": "backup_completed", "at": hhmm, "time_zone": tz}),
        )
        .unwrap();
        Deadline {
            id: "d".into(),
            organization_id: spec.organization_id,
            asset_id: None,
            event_type: spec.event_type,
            schedule: spec.schedule,
            enabled: true,
            checked_until: None,
            created_at: at(created),
            updated_at: at(created),
        }
    }

    #[test]
    fn daily_periods_end_at_local_time_and_follow_daylight_saving() {
        // 05:00 Budapest is 04:00 UTC in winter (CET) and 03:00 UTC in summer (CEST).
        let d = daily("05:00", "Europe/Budapest", "2026-11-23T12:00:00Z");
        assert_eq!(d.missed_event_type(), "expected_backup_completed_missed");
        assert!(d.due_periods(at("2026-11-24T03:59:59Z")).is_empty());
        let due = d.due_periods(at("2026-11-24T04:00:00Z"));
        assert_eq!(
            due,
            [Period {
                start: at("2026-11-23T04:00:00Z"),
                deadline: at("2026-11-24T04:00:00Z")
            }]
        );
        let checked = Deadline {
            checked_until: Some(due[0].deadline),
            ..d.clone()
        };
        assert!(checked.due_periods(at("2026-11-24T12:00:00Z")).is_empty());
        assert_eq!(checked.due_periods(at("2026-11-26T05:00:00Z")).len(), 2);
        // Across the spring change (29 March 2026): the period is 23 hours.
        let spring = daily("05:00", "Europe/Budapest", "2026-03-28T12:00:00Z");
        let p = spring.due_periods(at("2026-03-29T12:00:00Z"));
        assert_eq!(p[0].deadline, at("2026-03-29T03:00:00Z"));
        assert_eq!(p[0].deadline - p[0].start, Duration::hours(23));
    }

    #[test]
    fn interval_periods_with_grace_and_a_capped_catch_up() {
        let spec = DeadlineSpec::read(
            json!({"organization_id": "o", "event_type": "heartbeat", "every_hours": 6, "grace_minutes": 30}),
        )
        .unwrap();
        let d = Deadline {
            id: "d".into(),
            organization_id: "o".into(),
            asset_id: None,
            event_type: spec.event_type,
            schedule: spec.schedule,
            enabled: true,
            checked_until: None,
            created_at: at("2026-01-01T00:00:00Z"),
            updated_at: at("2026-01-01T00:00:00Z"),
        };
        assert!(d.due_periods(at("2026-01-01T06:29:00Z")).is_empty());
        let p = d.due_periods(at("2026-01-01T06:30:00Z"));
        assert_eq!(
            p,
            [Period {
                start: at("2026-01-01T00:00:00Z"),
                deadline: at("2026-01-01T06:30:00Z")
            }]
        );
        let next = Deadline {
            checked_until: Some(p[0].deadline),
            ..d.clone()
        };
        assert_eq!(
            next.due_periods(at("2026-01-01T12:30:00Z"))[0].start,
            at("2026-01-01T06:00:00Z")
        );
        let far = d.due_periods(at("2026-03-01T00:00:00Z"));
        assert_eq!(far.len(), MAX_CATCH_UP);
        assert!(far.windows(2).all(|w| w[0].deadline < w[1].deadline));
    }

    #[test]
    fn specs_name_every_bad_field() {
        let e = DeadlineSpec::read(
            json!({"event_type": "Bad", "at": "25:00", "time_zone": "Mars/Olympus"}),
        )
        .unwrap_err();
        let f: Vec<_> = e.0.iter().map(|f| f.field.as_str()).collect();
        for field in ["organization_id", "event_type", "at", "time_zone"] {
            assert!(f.contains(&field), "{field} in {f:?}");
        }
        let e = DeadlineSpec::read(
            json!({"organization_id": "o", "event_type": "x", "every_hours": 0, "at": "05:00"}),
        )
        .unwrap_err();
        assert!(e.0.iter().any(|f| f.field == "every_hours"));
        let e = DeadlineSpec::read(
            json!({"organization_id": "o", "event_type": "x", "every_hours": 2, "grace_minutes": 500}),
        )
        .unwrap_err();
        assert!(e.0.iter().any(|f| f.field == "grace_minutes"));
    }
}
