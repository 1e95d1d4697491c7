//! What the integration tests share: a fresh database per test on each backend, and the macro that
//! runs one storage case on both.
//!
//! PostgreSQL is the server on `127.0.0.1:5432` (user `postgres`, trust auth), or the admin URL in
//! `MUSTER_TEST_POSTGRES_URL`. Each test gets its own database, `muster_test_<uuid>`, dropped when
//! its guard goes. Without a reachable server the PostgreSQL half of a test is skipped with a loud
//! warning, except under `CI=true`, where it fails.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use muster_store::{Store, StoreError};
use muster_store_postgres::PostgresStore;
use muster_store_sqlite::SqliteStore;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The outbox after `after` once `done` holds for it, or as it is after 20 s. On PostgreSQL a
/// committed event becomes deliverable only once every older writing transaction of the cluster
/// ended, other tests' (in other databases) too, so a test reads the outbox by waiting for it.
pub async fn outbox_once(
    s: &dyn Store,
    after: muster_store::delivery::OutboxPosition,
    done: impl Fn(&[muster_store::OutboxEntry]) -> bool,
) -> Vec<muster_store::OutboxEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut signal = s.outbox_signal().subscribe();
    loop {
        let found = s.outbox_after(after, 100_000).await.unwrap();
        if done(&found) || tokio::time::Instant::now() > deadline {
            return found;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), signal.changed()).await;
    }
}

/// The server a test database is made on, unless `MUSTER_TEST_POSTGRES_URL` names another.
pub const DEFAULT_POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long to wait for PostgreSQL to answer before calling it unreachable.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary directory holding one SQLite database; removed on drop.
pub struct TempDirGuard {
    dir: tempfile::TempDir,
    url: String,
}

impl TempDirGuard {
    /// The database's URL (`sqlite://…/muster.db`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A fresh, empty SQLite database location (the file is created on first connect).
pub fn sqlite_database() -> TempDirGuard {
    let dir = tempfile::Builder::new()
        .prefix("muster-test-")
        .tempdir()
        .expect("create a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("muster.db").display());
    TempDirGuard { dir, url }
}

/// A migrated SQLite store on a fresh temporary file.
pub async fn sqlite_store() -> (Arc<dyn Store>, TempDirGuard) {
    let guard = sqlite_database();
    let store = SqliteStore::connect(guard.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", guard.url()));
    (Arc::new(store), guard)
}

/// A PostgreSQL database made for one test; dropped (best effort) on drop.
pub struct PgGuard {
    admin_url: String,
    name: String,
    url: String,
}

impl PgGuard {
    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keeps the database after the test (for looking at it afterwards); answers its URL.
    pub fn keep(self) -> String {
        let url = self.url.clone();
        std::mem::forget(self);
        url
    }
}

impl Drop for PgGuard {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on async work: a thread with
        // its own small runtime does it. `WITH (FORCE)` ends connections a store left open.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql)
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("note: could not drop test database {}: {e}", self.name);
        }
    }
}

/// The admin URL test databases are created through.
pub fn postgres_admin_url() -> String {
    std::env::var("MUSTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_ADMIN_URL.to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `admin_url` with its database name replaced by `database`, keeping any query string.
fn with_database(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

/// A fresh, empty PostgreSQL database, or `None` (with a loud warning) when PostgreSQL is not
/// reachable outside CI. Under `CI=true` an unreachable server fails the test.
pub async fn postgres_database() -> Option<PgGuard> {
    let admin_url = postgres_admin_url();
    let unreachable = |why: String| -> Option<PgGuard> {
        if in_ci() {
            panic!(
                "PostgreSQL not reachable at {admin_url}: {why}. CI must run the PostgreSQL half of \
                 the storage tests: start PostgreSQL or set MUSTER_TEST_POSTGRES_URL"
            );
        }
        eprintln!(
            "WARNING: PostgreSQL not reachable at {admin_url} ({why}): the PostgreSQL half of this \
             test was SKIPPED"
        );
        None
    };
    let mut admin =
        match tokio::time::timeout(POSTGRES_CONNECT_TIMEOUT, PgConnection::connect(&admin_url))
            .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return unreachable(e.to_string()),
            Err(_) => return unreachable(format!("no answer in {POSTGRES_CONNECT_TIMEOUT:?}")),
        };
    let name = format!("muster_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("create database {name} at {admin_url}: {e}"));
    let _ = admin.close().await;
    let url = with_database(&admin_url, &name);
    Some(PgGuard {
        admin_url,
        name,
        url,
    })
}

/// The URL of a fresh, empty PostgreSQL database, or `None` when PostgreSQL is not reachable
/// (see [`postgres_database`]). The database is left behind; prefer [`postgres_database`], whose
/// guard drops it.
pub async fn postgres_url() -> Option<String> {
    postgres_database().await.map(PgGuard::keep)
}

/// A migrated PostgreSQL store on a fresh database, or `None` when PostgreSQL is not reachable
/// (see [`postgres_database`]).
pub async fn postgres_store() -> Option<(Arc<dyn Store>, PgGuard)> {
    let guard = postgres_database().await?;
    let store = PostgresStore::connect(guard.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", guard.url()));
    Some((Arc::new(store), guard))
}

/// A fresh database of one backend, for cases that connect to it more than once.
pub enum TestDatabase {
    Sqlite(TempDirGuard),
    Postgres(PgGuard),
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite(g) => g.url(),
            TestDatabase::Postgres(g) => g.url(),
        }
    }

    /// Connects (and migrates) a new store on this database.
    pub async fn connect(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            TestDatabase::Sqlite(g) => Arc::new(SqliteStore::connect(g.url()).await?),
            TestDatabase::Postgres(g) => Arc::new(PostgresStore::connect(g.url()).await?),
        })
    }
}

/// Runs each storage case on both backends, each time on a fresh database.
///
/// ```ignore
/// backend_cases! {
///     stores: [inserts_then_gets],       // async fn inserts_then_gets(store: Arc<dyn Store>)
///     databases: [migrates_twice],       // async fn migrates_twice(db: TestDatabase)
/// }
/// ```
///
/// expands to `sqlite::inserts_then_gets`, `postgres::inserts_then_gets`, `sqlite::migrates_twice`
/// and `postgres::migrates_twice`, each a `#[tokio::test]`.
macro_rules! backend_cases {
    (
        stores: [$($case:ident),* $(,)?]
        $(, databases: [$($db_case:ident),* $(,)?])?
        $(,)?
    ) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let (store, _dir) = $crate::support::sqlite_store().await;
                    super::$case(store.clone()).await;
                    store.close().await;
                }
            )*
            $($(
                #[tokio::test]
                async fn $db_case() {
                    let db = $crate::support::TestDatabase::Sqlite($crate::support::sqlite_database());
                    super::$db_case(db).await;
                }
            )*)?
        }

        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some((store, _db)) = $crate::support::postgres_store().await else {
                        return;
                    };
                    super::$case(store.clone()).await;
                    store.close().await;
                }
            )*
            $($(
                #[tokio::test]
                async fn $db_case() {
                    let Some(db) = $crate::support::postgres_database().await else {
                        return;
                    };
                    super::$db_case($crate::support::TestDatabase::Postgres(db)).await;
                }
            )*)?
        }
    };
}
pub(crate) use backend_cases;

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@db:5433?sslmode=disable", "t1"),
            "postgres://u:p@db:5433/t1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h/admin?application_name=x", "t2"),
            "postgres://u@h/t2?application_name=x"
        );
    }
}
