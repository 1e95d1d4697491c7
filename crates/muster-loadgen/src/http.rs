//! HTTP plumbing shared by the generators: a keep-alive client for loopback, setup calls that
//! expect one status, and `/metrics` scrapes.

use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Client, StatusCode, Url};
use serde_json::Value;

use crate::prom::Scrape;

/// One request may take this long before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client that keeps up to `connections` idle connections per host, sets `TCP_NODELAY`, never
/// uses a proxy and never follows redirects.
pub fn client(connections: usize) -> anyhow::Result<Client> {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections.max(1))
        .pool_idle_timeout(Duration::from_secs(300))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")
}

/// `Bearer <secret>`, marked sensitive so it never appears in debug output.
pub fn bearer(secret: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {secret}")).context("token header")?;
    v.set_sensitive(true);
    Ok(v)
}

/// A POST of JSON with `auth`, expecting `expect`; answers the JSON body.
pub async fn post_json(
    client: &Client,
    url: &Url,
    auth: &HeaderValue,
    body: &Value,
    expect: StatusCode,
) -> anyhow::Result<Value> {
    let resp = client
        .post(url.clone())
        .header(AUTHORIZATION, auth.clone())
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.with_context(|| format!("POST {url}"))?;
    if status != expect {
        bail!("POST {url}: {status}: {}", truncate(&text, 500));
    }
    serde_json::from_str(&text).with_context(|| format!("POST {url}: the answer is not JSON"))
}

/// `GET /metrics`, parsed.
pub async fn scrape(client: &Client, base: &Url) -> anyhow::Result<Scrape> {
    let url = base.join("metrics")?;
    let resp = client.get(url.clone()).send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if status != StatusCode::OK {
        bail!("GET {url}: {status}: {}", truncate(&text, 500));
    }
    Ok(Scrape::parse(&text))
}

/// At most `n` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
