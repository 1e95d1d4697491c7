//! First start and the `muster admin` commands: the first administrator and tokens for scripts.

use muster_domain::{Access, Actor, Grant, Permission};
use muster_store::PageRequest;
use secrecy::{ExposeSecret, SecretString};

use crate::accounts::{IssuedToken, create_user, issue_token};
use crate::auth::new_secret;
use crate::error::ApiError;
use crate::state::AppState;

/// What [`ensure_first_admin`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstAdmin {
    /// Users exist already; nothing done.
    Existing,
    /// Created with the configured password.
    Created { email: String },
    /// Created with a generated password, to be shown once.
    Generated { email: String, password: String },
}

/// On an empty user table, creates the first global administrator from `email` (default
/// `admin@muster.local`) and `password` (default: generated).
pub async fn ensure_first_admin(
    state: &AppState,
    email: Option<&str>,
    password: Option<&SecretString>,
) -> Result<FirstAdmin, ApiError> {
    if state.store.count_users().await? > 0 {
        return Ok(FirstAdmin::Existing);
    }
    let email = email.unwrap_or("admin@muster.local").to_string();
    let (password, generated) = match password {
        Some(p) => (p.expose_secret().to_string(), false),
        None => (new_secret(), true),
    };
    create_user(
        state,
        &Actor::system("bootstrap"),
        email.clone(),
        password.clone(),
        vec![Grant::global(Permission::Admin)],
    )
    .await?;
    Ok(if generated {
        FirstAdmin::Generated { email, password }
    } else {
        FirstAdmin::Created { email }
    })
}

/// Issues a token with all permissions of the first administrator (the oldest global admin).
pub async fn create_admin_token(state: &AppState, name: &str) -> Result<IssuedToken, ApiError> {
    let mut page = PageRequest {
        page: 1,
        per_page: 500,
    };
    loop {
        let users = state.store.list_users(page).await?;
        let mut admins: Vec<_> = users
            .items
            .iter()
            .filter(|u| Access::new(u.permissions.clone()).is_admin())
            .collect();
        admins.sort_by_key(|u| u.created_at);
        if let Some(admin) = admins.first() {
            let access = Access::new(admin.permissions.clone());
            return issue_token(
                state,
                &Actor::system("muster admin create-token"),
                &admin.id,
                &access,
                name.to_string(),
                None,
                None,
            )
            .await;
        }
        if users.items.len() < page.per_page as usize {
            return Err(ApiError::conflict(
                "there is no administrator yet: start `muster serve` once to create one",
            ));
        }
        page.page += 1;
    }
}
