//! Events on PostgreSQL: appended inside the writers' transactions, listed newest first.

use muster_domain::{Actor, ActorKind, Event, Severity};
use muster_store::sql::{Dialect, capped_count, event_filter};
use muster_store::{EventQuery, Page, Result, StoreError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::{PostgresStore, bind_args, bind_scalar_args, map_err};

const INSERT: &str = "INSERT INTO events (id, occurred_at, type, severity, organization_id, \
    object_type, object_id, actor_type, actor_id, actor_name, message, changes, details) ";

/// Appends `event` in the caller's transaction.
pub(crate) async fn append(conn: &mut PgConnection, event: &Event) -> Result<()> {
    append_all(conn, &[event]).await
}

/// Appends `events` in the caller's transaction, many rows to a statement.
pub(crate) async fn append_all(conn: &mut PgConnection, events: &[&Event]) -> Result<()> {
    // 13 parameters a row, under PostgreSQL's limit of 65,535 per statement.
    for chunk in events.chunks(4_000) {
        let mut q = QueryBuilder::<Postgres>::new(INSERT);
        q.push_values(chunk, |mut b, event| {
            b.push_bind(&event.id)
                .push_bind(event.occurred_at)
                .push_bind(&event.event_type)
                .push_bind(event.severity.as_str())
                .push_bind(&event.organization_id)
                .push_bind(&event.object_type)
                .push_bind(&event.object_id)
                .push_bind(event.actor.kind.as_str())
                .push_bind(&event.actor.id)
                .push_bind(&event.actor.name)
                .push_bind(&event.message)
                .push_bind(event.changes.as_ref().map(Json))
                .push_bind(event.details.as_ref().map(Json));
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

pub(crate) fn from_row(r: &PgRow) -> Result<Event> {
    let severity: String = r.try_get("severity").map_err(map_err)?;
    let actor_type: String = r.try_get("actor_type").map_err(map_err)?;
    let changes: Option<Json<Value>> = r.try_get("changes").map_err(map_err)?;
    let details: Option<Json<Value>> = r.try_get("details").map_err(map_err)?;
    Ok(Event {
        id: r.try_get("id").map_err(map_err)?,
        occurred_at: r.try_get("occurred_at").map_err(map_err)?,
        event_type: r.try_get("type").map_err(map_err)?,
        severity: Severity::parse(&severity)
            .ok_or_else(|| StoreError::Other(format!("bad severity `{severity}`")))?,
        organization_id: r.try_get("organization_id").map_err(map_err)?,
        object_type: r.try_get("object_type").map_err(map_err)?,
        object_id: r.try_get("object_id").map_err(map_err)?,
        actor: Actor {
            kind: ActorKind::parse(&actor_type)
                .ok_or_else(|| StoreError::Other(format!("bad actor type `{actor_type}`")))?,
            id: r.try_get("actor_id").map_err(map_err)?,
            name: r.try_get("actor_name").map_err(map_err)?,
        },
        message: r.try_get("message").map_err(map_err)?,
        changes: changes.map(|j| j.0),
        details: details.map(|j| j.0),
    })
}

pub(crate) async fn list(store: &PostgresStore, q: &EventQuery) -> Result<Page<Event>> {
    let f = event_filter(Dialect::Postgres, q);
    let where_sql = f.sql();

    let sql = format!(
        "SELECT e.* FROM events e{where_sql} ORDER BY e.seq DESC LIMIT {} OFFSET {}",
        q.page.limit(),
        q.page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    let total = match q.page.total_from(rows.len()) {
        Some(total) => total,
        None => {
            let count_sql = capped_count("events e", &where_sql);
            let n: i64 = bind_scalar_args(sqlx::query_scalar(&count_sql), &f.args)
                .fetch_one(&store.pool)
                .await
                .map_err(map_err)?;
            n as u64
        }
    };
    Ok(Page {
        items: rows.iter().map(from_row).collect::<Result<_>>()?,
        total,
    })
}
