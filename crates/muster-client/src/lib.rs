//! A client of muster's REST API for the CLI: assets, discovery, health checks and events.
//!
//! It rides on the providers' [`ApiClient`] (bearer token, retries on 5xx and network errors,
//! 429 `Retry-After`, a deadline per call), so a muster server is called with the same care as a
//! provider, and its errors read like theirs: `muster: POST /api/… answered 422 (code: message)`
//! from the server's one error shape. It depends on no server crate.

use std::time::Duration;

use muster_providers::client::ApiRequest;
use muster_providers::{ApiClient, BearerToken, ProviderError};
use reqwest::Method;
use serde_json::Value;

/// The prefix of every error.
pub const NAME: &str = "muster";
/// The largest page the server serves.
pub const PER_PAGE: u32 = 500;

/// A client of one muster server, as one token.
#[derive(Debug, Clone)]
pub struct MusterClient {
    api: ApiClient,
}

impl MusterClient {
    /// `url` is the server's base (`http://127.0.0.1:8080`); calls give up after 60 s.
    pub fn new(url: &str, token: &str) -> Result<Self, ProviderError> {
        let api = ApiClient::new(NAME, url, BearerToken::new(token))?
            .with_deadline(Duration::from_secs(60));
        Ok(MusterClient { api })
    }

    pub fn base_url(&self) -> &str {
        self.api.base_url()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Result<Value, ProviderError> {
        let mut req = ApiRequest::new(method, path);
        req.query = query.to_vec();
        req.body = body.map(|b| serde_json::to_vec(b).expect("JSON values serialize"));
        let resp = self.api.send(&req).await?;
        if resp.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&resp.body).map_err(|error| ProviderError::Decode {
            provider: NAME,
            method: req.method.clone(),
            path: req.display_path(),
            error,
        })
    }

    pub async fn get(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Value, ProviderError> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(
        &self,
        path: &str,
        query: &[(String, String)],
        body: &Value,
    ) -> Result<Value, ProviderError> {
        self.call(Method::POST, path, query, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ProviderError> {
        self.call(Method::PATCH, path, &[], Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ProviderError> {
        self.call(Method::DELETE, path, &[], None).await.map(|_| ())
    }

    /// One page of assets matching `query` (the list API's filters).
    pub async fn list_assets(&self, query: &[(String, String)]) -> Result<Value, ProviderError> {
        self.get("/api/infrastructure/assets", query).await
    }

    /// Every asset matching `query`, all pages.
    pub async fn all_assets(
        &self,
        query: &[(String, String)],
    ) -> Result<Vec<Value>, ProviderError> {
        let mut out = Vec::new();
        for page in 1u32.. {
            let mut q = query.to_vec();
            q.retain(|(k, _)| k != "page" && k != "per_page");
            q.push(("page".into(), page.to_string()));
            q.push(("per_page".into(), PER_PAGE.to_string()));
            let body = self.list_assets(&q).await?;
            let items = body["assets"].as_array().cloned().unwrap_or_default();
            let n = items.len();
            out.extend(items);
            if n < PER_PAGE as usize {
                break;
            }
        }
        Ok(out)
    }

    pub async fn get_asset(&self, id: &str) -> Result<Value, ProviderError> {
        self.get(&format!("/api/infrastructure/assets/{id}"), &[])
            .await
    }

    pub async fn create_asset(&self, body: &Value) -> Result<Value, ProviderError> {
        self.post("/api/infrastructure/assets", &[], body).await
    }

    /// A partial update (`PATCH`).
    pub async fn update_asset(&self, id: &str, patch: &Value) -> Result<Value, ProviderError> {
        self.patch(&format!("/api/infrastructure/assets/{id}"), patch)
            .await
    }

    pub async fn delete_asset(&self, id: &str) -> Result<(), ProviderError> {
        self.delete(&format!("/api/infrastructure/assets/{id}"))
            .await
    }

    /// Runs discovery now: every integration the token may edit, or one.
    pub async fn discover(&self, integration_id: Option<&str>) -> Result<Value, ProviderError> {
        let query: Vec<(String, String)> = integration_id
            .map(|id| vec![("integration_id".to_string(), id.to_string())])
            .unwrap_or_default();
        self.call(
            Method::POST,
            "/api/infrastructure/assets/discover",
            &query,
            None,
        )
        .await
    }

    /// Checks an asset now; answers the health result.
    pub async fn health_check(&self, id: &str) -> Result<Value, ProviderError> {
        let path = format!("/api/infrastructure/assets/{id}/health-check");
        self.call(Method::POST, &path, &[], None).await
    }

    /// A page of events, newest first.
    pub async fn events(&self, query: &[(String, String)]) -> Result<Value, ProviderError> {
        self.get("/api/events", query).await
    }
}
