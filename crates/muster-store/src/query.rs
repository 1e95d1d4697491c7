//! What list queries ask for: filters, sorting and pages.

use chrono::{DateTime, Utc};
use muster_domain::{AssetStatus, AssetType, Health, LabelSelector, Severity, Visibility};

/// Largest page a caller may ask for.
pub const MAX_PER_PAGE: u32 = 500;
/// Page size when none is asked for.
pub const DEFAULT_PER_PAGE: u32 = 50;

/// A 1-based page of `per_page` items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

impl PageRequest {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.per_page)
    }

    pub fn limit(&self) -> i64 {
        i64::from(self.per_page)
    }
}

/// Lists count their matches exactly up to this many; a larger total is reported as
/// `COUNT_LIMIT + 1` ("more than 1,000"), because counting a large match set costs more than the
/// page itself: a label selector matching 22,000 of 100,000 assets takes ~25 ms to count to
/// 10,000 on a 2-core machine, ~2.5 ms to 1,000 (BENCHMARKS.md). GitHub's search caps at 1,000
/// for the same reason; exact counts by group are an aggregate's job, not a list's.
pub const COUNT_LIMIT: u64 = 1_000;

/// One page of results and how many there are in all (at most `COUNT_LIMIT + 1`, which means
/// "more than `COUNT_LIMIT`").
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

impl<T> Page<T> {
    /// Whether no page follows this one (the answer to `req`): it was short, or the exact total
    /// ends here. Walk lists with this, never with `total` alone, which stops counting at
    /// [`COUNT_LIMIT`].
    pub fn is_last(&self, req: PageRequest) -> bool {
        self.items.len() < req.per_page as usize
            || (self.total <= COUNT_LIMIT
                && u64::from(req.page) * u64::from(req.per_page) >= self.total)
    }
}

/// Every item of a list, page by page (500 at a time) until [`Page::is_last`].
pub async fn all_pages<T, E, F, Fut>(mut fetch: F) -> Result<Vec<T>, E>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, E>>,
{
    let mut req = PageRequest {
        page: 1,
        per_page: MAX_PER_PAGE,
    };
    let mut all = Vec::new();
    loop {
        let page = fetch(req).await?;
        let last = page.is_last(req);
        all.extend(page.items);
        if last {
            return Ok(all);
        }
        req.page += 1;
    }
}

impl PageRequest {
    /// The total of a list when its page tells it without counting: a page shorter than asked
    /// for is the last one, unless it lies past the end (empty, and not the first page).
    pub fn total_from(&self, rows: usize) -> Option<u64> {
        let rows = rows as u64;
        let short = rows < u64::from(self.per_page);
        (short && (rows > 0 || self.page == 1)).then(|| self.offset() as u64 + rows)
    }
}

/// What assets can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetSortField {
    Name,
    CreatedAt,
    UpdatedAt,
    Status,
    Health,
    AssetType,
    LastSeenAt,
}

impl AssetSortField {
    pub const ALL: &'static [(&'static str, AssetSortField)] = &[
        ("name", AssetSortField::Name),
        ("created_at", AssetSortField::CreatedAt),
        ("updated_at", AssetSortField::UpdatedAt),
        ("status", AssetSortField::Status),
        ("health", AssetSortField::Health),
        ("asset_type", AssetSortField::AssetType),
        ("last_seen_at", AssetSortField::LastSeenAt),
    ];

    pub fn column(self) -> &'static str {
        match self {
            AssetSortField::Name => "name",
            AssetSortField::CreatedAt => "created_at",
            AssetSortField::UpdatedAt => "updated_at",
            AssetSortField::Status => "status",
            AssetSortField::Health => "health",
            AssetSortField::AssetType => "asset_type",
            AssetSortField::LastSeenAt => "last_seen_at",
        }
    }
}

/// Sort order of an asset list; ties are broken by id so pages never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetSort {
    pub field: AssetSortField,
    pub descending: bool,
}

impl Default for AssetSort {
    fn default() -> Self {
        Self {
            field: AssetSortField::Name,
            descending: false,
        }
    }
}

impl AssetSort {
    /// Parses `name`, `-name`, `name:asc` or `name:desc`.
    pub fn parse(s: &str) -> Option<Self> {
        let (field, descending) = if let Some(f) = s.strip_prefix('-') {
            (f, true)
        } else if let Some(f) = s.strip_suffix(":desc") {
            (f, true)
        } else {
            (s.strip_suffix(":asc").unwrap_or(s), false)
        };
        AssetSortField::ALL
            .iter()
            .find(|(n, _)| *n == field)
            .map(|(_, f)| AssetSort {
                field: *f,
                descending,
            })
    }
}

/// Which assets to list. Every filter narrows; empty lists mean "any".
#[derive(Debug, Clone, PartialEq)]
pub struct AssetQuery {
    pub visibility: Visibility,
    pub organization_id: Option<String>,
    pub asset_type: Vec<AssetType>,
    pub status: Vec<AssetStatus>,
    pub health: Vec<Health>,
    pub provider: Option<String>,
    /// `key=value` pairs that must all be present.
    pub labels: Vec<(String, String)>,
    pub selector: LabelSelector,
    /// Matches name, hostname or an IP address, case-insensitively, as a substring.
    pub q: Option<String>,
    pub sort: AssetSort,
    pub page: PageRequest,
    /// Whether the answer's `total` is wanted. When not (a dashboard's first rows), no count
    /// query runs and `total` is only what this page and those before it hold.
    pub count: bool,
}

impl AssetQuery {
    /// Everything the visibility allows, first page, default order.
    pub fn all(visibility: Visibility) -> Self {
        Self {
            visibility,
            organization_id: None,
            asset_type: Vec::new(),
            status: Vec::new(),
            health: Vec::new(),
            provider: None,
            labels: Vec::new(),
            selector: LabelSelector::default(),
            q: None,
            sort: AssetSort::default(),
            page: PageRequest::default(),
            count: true,
        }
    }
}

/// Which events to list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub visibility: Visibility,
    pub object_id: Option<String>,
    pub object_type: Option<String>,
    pub organization_id: Option<String>,
    pub event_type: Vec<String>,
    /// Any of these severities (none: all).
    pub severity: Vec<Severity>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: PageRequest,
}

impl EventQuery {
    pub fn all(visibility: Visibility) -> Self {
        Self {
            visibility,
            object_id: None,
            object_type: None,
            organization_id: None,
            event_type: Vec::new(),
            severity: Vec::new(),
            since: None,
            until: None,
            page: PageRequest::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_syntax() {
        let s = |x| AssetSort::parse(x).map(|s| (s.field, s.descending));
        assert_eq!(s("name"), Some((AssetSortField::Name, false)));
        assert_eq!(s("-created_at"), Some((AssetSortField::CreatedAt, true)));
        assert_eq!(s("status:desc"), Some((AssetSortField::Status, true)));
        assert_eq!(s("health:asc"), Some((AssetSortField::Health, false)));
        assert_eq!(s("password"), None);
    }

    #[tokio::test]
    async fn all_pages_walks_past_the_count_limit() {
        let items: Vec<u32> = (0..1_203).collect();
        let mut asked = 0;
        let got = all_pages(|req: PageRequest| {
            asked += 1;
            let start = (req.offset() as usize).min(items.len());
            let end = (start + req.per_page as usize).min(items.len());
            let page = Page {
                items: items[start..end].to_vec(),
                total: (items.len() as u64).min(COUNT_LIMIT + 1),
            };
            async move { Ok::<_, ()>(page) }
        })
        .await
        .unwrap();
        assert_eq!(got, items);
        assert_eq!(asked, 3);
    }

    #[test]
    fn the_last_page_is_short_or_ends_an_exact_total() {
        let req = |page| PageRequest { page, per_page: 2 };
        let page = |n: usize, total| Page {
            items: vec![(); n],
            total,
        };
        assert!(page(1, 3).is_last(req(2)));
        assert!(
            page(2, 4).is_last(req(2)),
            "an exact total ends on a full page"
        );
        assert!(!page(2, 5).is_last(req(2)));
        // Past the count limit the total says nothing: only a short page ends the walk.
        assert!(!page(2, COUNT_LIMIT + 1).is_last(req(600)));
        assert!(page(0, COUNT_LIMIT + 1).is_last(req(601)));
    }

    #[test]
    fn short_pages_tell_their_total() {
        let p = |page, per_page| PageRequest { page, per_page };
        assert_eq!(p(1, 50).total_from(0), Some(0));
        assert_eq!(p(1, 50).total_from(7), Some(7));
        assert_eq!(p(3, 50).total_from(7), Some(107));
        // A full page may have more behind it; an empty page past the end says nothing.
        assert_eq!(p(1, 50).total_from(50), None);
        assert_eq!(p(3, 50).total_from(0), None);
    }

    #[test]
    fn page_offsets() {
        let p = PageRequest {
            page: 3,
            per_page: 50,
        };
        assert_eq!((p.offset(), p.limit()), (100, 50));
    }
}

/// How many assets share one status and health (within what a caller may see).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetCount {
    pub status: AssetStatus,
    pub health: Health,
    pub count: u64,
}
