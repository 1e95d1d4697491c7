//! Organizations, users, API tokens and console sessions on SQLite.

use chrono::{DateTime, Utc};
use muster_domain::{ApiToken, Event, Organization, OrganizationStatus, User, Visibility};
use muster_store::sql::{Dialect, Filter};
use muster_store::{Page, PageRequest, Result, Session, StoreError};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::{
    SqliteStore, bind_args, bind_scalar_args, events, from_json, map_err, opt_ts, parse_opt_ts,
    parse_ts, to_json, ts,
};

fn org_from_row(r: &SqliteRow) -> Result<Organization> {
    let status: String = r.try_get("status").map_err(map_err)?;
    Ok(Organization {
        id: r.try_get("id").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        slug: r.try_get("slug").map_err(map_err)?,
        status: OrganizationStatus::parse(&status)
            .ok_or_else(|| StoreError::Other(format!("bad organization status `{status}`")))?,
        agent_liveness: r
            .try_get::<Option<String>, _>("agent_liveness")
            .map_err(map_err)?
            .as_deref()
            .map(from_json)
            .transpose()?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
        updated_at: parse_ts(r.try_get("updated_at").map_err(map_err)?)?,
    })
}

pub(crate) async fn insert_organization(
    store: &SqliteStore,
    org: &Organization,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO organizations (id, name, slug, status, agent_liveness, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(&org.slug)
    .bind(org.status.as_str())
    .bind(org.agent_liveness.as_ref().map(to_json))
    .bind(ts(org.created_at))
    .bind(ts(org.updated_at))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get_organization(store: &SqliteStore, id: &str) -> Result<Organization> {
    let row = sqlx::query("SELECT * FROM organizations WHERE id = ?")
        .bind(id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    org_from_row(&row)
}

pub(crate) async fn list_organizations(
    store: &SqliteStore,
    visibility: &Visibility,
    page: PageRequest,
) -> Result<Page<Organization>> {
    let mut f = Filter::new(Dialect::Sqlite);
    f.visible("id", visibility);
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM organizations{w}")),
        &f.args,
    )
    .fetch_one(&store.reader)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM organizations{w} ORDER BY name, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(org_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn update_organization(
    store: &SqliteStore,
    org: &Organization,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE organizations SET name = ?, slug = ?, status = ?, agent_liveness = ?, \
         updated_at = ? WHERE id = ?",
    )
    .bind(&org.name)
    .bind(&org.slug)
    .bind(org.status.as_str())
    .bind(org.agent_liveness.as_ref().map(to_json))
    .bind(ts(org.updated_at))
    .bind(&org.id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn delete_organization(
    store: &SqliteStore,
    id: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let in_use: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM assets WHERE organization_id = ?")
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
    if in_use > 0 {
        return Err(StoreError::Conflict(format!(
            "the organization still has {in_use} assets"
        )));
    }
    let done = sqlx::query("DELETE FROM organizations WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

fn user_from_row(r: &SqliteRow) -> Result<User> {
    Ok(User {
        id: r.try_get("id").map_err(map_err)?,
        email: r.try_get("email").map_err(map_err)?,
        permissions: from_json(r.try_get("permissions").map_err(map_err)?)?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
        updated_at: parse_ts(r.try_get("updated_at").map_err(map_err)?)?,
    })
}

pub(crate) async fn insert_user(
    store: &SqliteStore,
    user: &User,
    password_hash: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, permissions, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(password_hash)
    .bind(to_json(&user.permissions))
    .bind(ts(user.created_at))
    .bind(ts(user.updated_at))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get_user(store: &SqliteStore, id: &str) -> Result<User> {
    let row = sqlx::query("SELECT * FROM users WHERE id = ?")
        .bind(id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    user_from_row(&row)
}

pub(crate) async fn get_user_credentials(
    store: &SqliteStore,
    email: &str,
) -> Result<(User, String)> {
    let row = sqlx::query("SELECT * FROM users WHERE email = ?")
        .bind(email)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    Ok((
        user_from_row(&row)?,
        row.try_get("password_hash").map_err(map_err)?,
    ))
}

pub(crate) async fn list_users(store: &SqliteStore, page: PageRequest) -> Result<Page<User>> {
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&store.reader)
        .await
        .map_err(map_err)?;
    let rows = sqlx::query("SELECT * FROM users ORDER BY email LIMIT ? OFFSET ?")
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(user_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn update_user(
    store: &SqliteStore,
    user: &User,
    password_hash: Option<&str>,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query(
        "UPDATE users SET email = ?, permissions = ?, updated_at = ?, \
         password_hash = COALESCE(?, password_hash) WHERE id = ?",
    )
    .bind(&user.email)
    .bind(to_json(&user.permissions))
    .bind(ts(user.updated_at))
    .bind(password_hash)
    .bind(&user.id)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    if password_hash.is_some() {
        // A new password ends every console session of the user.
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(&user.id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn delete_user(store: &SqliteStore, id: &str, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn count_users(store: &SqliteStore) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(n as u64)
}

fn token_from_row(r: &SqliteRow) -> Result<ApiToken> {
    Ok(ApiToken {
        id: r.try_get("id").map_err(map_err)?,
        user_id: r.try_get("user_id").map_err(map_err)?,
        name: r.try_get("name").map_err(map_err)?,
        permissions: from_json(r.try_get("permissions").map_err(map_err)?)?,
        expires_at: parse_opt_ts(r.try_get("expires_at").map_err(map_err)?)?,
        last_used_at: parse_opt_ts(r.try_get("last_used_at").map_err(map_err)?)?,
        created_at: parse_ts(r.try_get("created_at").map_err(map_err)?)?,
    })
}

pub(crate) async fn insert_token(
    store: &SqliteStore,
    token: &ApiToken,
    secret_hash: &str,
    event: &Event,
) -> Result<()> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO api_tokens (id, user_id, name, secret_hash, permissions, expires_at, last_used_at, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&token.id)
    .bind(&token.user_id)
    .bind(&token.name)
    .bind(secret_hash)
    .bind(to_json(&token.permissions))
    .bind(opt_ts(token.expires_at))
    .bind(opt_ts(token.last_used_at))
    .bind(ts(token.created_at))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn get_token(store: &SqliteStore, id: &str) -> Result<ApiToken> {
    let row = sqlx::query("SELECT * FROM api_tokens WHERE id = ?")
        .bind(id)
        .fetch_optional(&store.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound)?;
    token_from_row(&row)
}

pub(crate) async fn list_tokens(
    store: &SqliteStore,
    user_id: Option<&str>,
    page: PageRequest,
) -> Result<Page<ApiToken>> {
    let mut f = Filter::new(Dialect::Sqlite);
    if let Some(u) = user_id {
        f.eq("user_id", u);
    }
    let w = f.sql();
    let total: i64 = bind_scalar_args(
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM api_tokens{w}")),
        &f.args,
    )
    .fetch_one(&store.reader)
    .await
    .map_err(map_err)?;
    let sql = format!(
        "SELECT * FROM api_tokens{w} ORDER BY created_at, id LIMIT {} OFFSET {}",
        page.limit(),
        page.offset()
    );
    let rows = bind_args(sqlx::query(&sql), &f.args)
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    Ok(Page {
        items: rows.iter().map(token_from_row).collect::<Result<_>>()?,
        total: total as u64,
    })
}

pub(crate) async fn delete_token(store: &SqliteStore, id: &str, event: &Event) -> Result<()> {
    let mut tx = store.begin().await?;
    let done = sqlx::query("DELETE FROM api_tokens WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    events::append(&mut tx, event).await?;
    tx.commit().await.map_err(map_err)
}

pub(crate) async fn authenticate_token(
    store: &SqliteStore,
    secret_hash: &str,
) -> Result<(ApiToken, User)> {
    let row = sqlx::query(
        "SELECT t.*, u.email AS u_email, u.permissions AS u_permissions, \
         u.created_at AS u_created_at, u.updated_at AS u_updated_at \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.secret_hash = ?",
    )
    .bind(secret_hash)
    .fetch_optional(&store.reader)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?;
    let token = token_from_row(&row)?;
    let user = User {
        id: token.user_id.clone(),
        email: row.try_get("u_email").map_err(map_err)?,
        permissions: from_json(row.try_get("u_permissions").map_err(map_err)?)?,
        created_at: parse_ts(row.try_get("u_created_at").map_err(map_err)?)?,
        updated_at: parse_ts(row.try_get("u_updated_at").map_err(map_err)?)?,
    };
    Ok((token, user))
}

pub(crate) async fn touch_token(store: &SqliteStore, id: &str, at: DateTime<Utc>) -> Result<()> {
    sqlx::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ?")
        .bind(ts(at))
        .bind(id)
        .execute(&store.writer)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn insert_session(store: &SqliteStore, s: &Session) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
    )
    .bind(&s.id_hash)
    .bind(&s.user_id)
    .bind(ts(s.created_at))
    .bind(ts(s.expires_at))
    .execute(&store.writer)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn session_user(
    store: &SqliteStore,
    id_hash: &str,
    now: DateTime<Utc>,
) -> Result<User> {
    let row = sqlx::query(
        "SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.id_hash = ? AND s.expires_at > ?",
    )
    .bind(id_hash)
    .bind(ts(now))
    .fetch_optional(&store.reader)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound)?;
    user_from_row(&row)
}

pub(crate) async fn delete_session(store: &SqliteStore, id_hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = ?")
        .bind(id_hash)
        .execute(&store.writer)
        .await
        .map_err(map_err)?;
    Ok(())
}
