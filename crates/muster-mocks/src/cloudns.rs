//! A ClouDNS API stand-in with its quirks (`providers.md` 3 and 6): every answer is HTTP 200,
//! failures say `"status": "Failed"` in the body (bad credentials, a missing zone, an unknown
//! record id, a TTL off the list, `list-zones` without `page` or `rows-per-page`, and the rate
//! limit of 20 requests a second); `records.json` is an object keyed by string id, or `[]` when
//! empty (`{}` on request); `id`, `ttl` and `priority` are strings, `status` an integer; hosts are
//! stored lowercased; `add-record` answers `data.id` as an integer. Parameters are read from the
//! query string, a form body or a JSON body, on GET and POST alike; main-user (`auth-id`) and
//! sub-user (`sub-auth-id`, `sub-auth-user`) credentials are accepted.
//!
//! Every request is recorded; [`CloudnsMock::mutations`] lists those that change records, so a
//! test can prove a dry run sent none.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use crate::record::{Recorder, RequestRecord};

/// The main user id a fresh mock accepts.
pub const DEFAULT_AUTH_ID: &str = "4711";
/// Its password.
pub const DEFAULT_PASSWORD: &str = "mock-cloudns-password";
/// The TTLs `add-record` and `mod-record` accept.
pub const ALLOWED_TTLS: [u32; 13] = [
    60, 300, 900, 1800, 3600, 21600, 43200, 86400, 172800, 259200, 604800, 1209600, 2592000,
];
/// The paths of the requests that change records.
pub const MUTATING_PATHS: [&str; 4] = [
    "/dns/add-record.json",
    "/dns/mod-record.json",
    "/dns/delete-record.json",
    "/dns/change-record-status.json",
];

/// The mock's state, shared with its server; clone it freely.
#[derive(Clone)]
pub struct CloudnsMock {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<CloudnsState>,
    recorder: Recorder,
}

struct CloudnsState {
    auth_id: String,
    sub_user: Option<String>,
    password: String,
    zones: BTreeMap<String, BTreeMap<u64, Value>>,
    next_id: u64,
    per_second: Option<u32>,
    recent: VecDeque<Instant>,
    empty_as_object: bool,
}

impl std::fmt::Debug for CloudnsMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudnsMock")
            .field("zones", &self.state().zones.len())
            .finish_non_exhaustive()
    }
}

impl Default for CloudnsMock {
    fn default() -> Self {
        Self::new()
    }
}

impl CloudnsMock {
    /// An account without zones, the default credentials and ClouDNS's 20 requests a second.
    pub fn new() -> Self {
        CloudnsMock {
            shared: Arc::new(Shared {
                state: Mutex::new(CloudnsState {
                    auth_id: DEFAULT_AUTH_ID.into(),
                    sub_user: None,
                    password: DEFAULT_PASSWORD.into(),
                    zones: BTreeMap::new(),
                    next_id: 270_000_000,
                    per_second: Some(20),
                    recent: VecDeque::new(),
                    empty_as_object: false,
                }),
                recorder: Recorder::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, CloudnsState> {
        self.shared.state.lock().expect("mock state lock")
    }

    /// The axum app serving this mock.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/dns/{method}", any(dispatch))
            .fallback(|| async { failed("Invalid API method.") })
            .with_state(self.clone())
    }

    /// Only these main-user credentials are accepted from now on.
    pub fn set_credentials(&self, auth_id: impl Into<String>, password: impl Into<String>) {
        let mut s = self.state();
        s.auth_id = auth_id.into();
        s.password = password.into();
    }

    /// Also accept `sub-auth-user=user` with the password.
    pub fn set_sub_user(&self, user: Option<String>) {
        self.state().sub_user = user;
    }

    /// Requests allowed per second before the `Failed` rate-limit answer (None: no limit).
    pub fn set_rate_limit(&self, per_second: Option<u32>) {
        self.state().per_second = per_second;
    }

    /// An empty `records.json` answers `{}` instead of `[]`.
    pub fn set_empty_records_as_object(&self, on: bool) {
        self.state().empty_as_object = on;
    }

    /// Adds an empty zone (no-op if it exists).
    pub fn add_zone(&self, name: &str) {
        self.state()
            .zones
            .entry(name.to_ascii_lowercase())
            .or_default();
    }

    pub fn zone_names(&self) -> Vec<String> {
        self.state().zones.keys().cloned().collect()
    }

    /// Adds a record as the API stores it; answers its id. MX and SRV take their numbers as
    /// `PRIORITY [WEIGHT PORT] TARGET` in `value`.
    pub fn put_record(
        &self,
        zone: &str,
        host: &str,
        record_type: &str,
        value: &str,
        ttl: u32,
    ) -> u64 {
        let mut s = self.state();
        s.next_id += 1;
        let id = s.next_id;
        let record_type = record_type.to_ascii_uppercase();
        let parts: Vec<&str> = value.split_whitespace().collect();
        let mut record = json!({
            "id": id.to_string(), "type": record_type, "host": host.to_ascii_lowercase(),
            "record": value, "dynamicurl_status": 0, "failover": "0", "ttl": ttl.to_string(),
            "status": 1,
        });
        match (record_type.as_str(), parts.as_slice()) {
            ("MX", [p, target]) => {
                record["priority"] = json!(p);
                record["record"] = json!(target);
            }
            ("SRV", [p, w, port, target]) => {
                record["priority"] = json!(p);
                record["weight"] = json!(w);
                record["port"] = json!(port);
                record["record"] = json!(target);
            }
            _ => {}
        }
        s.zones
            .entry(zone.to_ascii_lowercase())
            .or_default()
            .insert(id, record);
        id
    }

    /// The records of a zone as stored (empty if the zone does not exist).
    pub fn records(&self, zone: &str) -> Vec<Value> {
        self.state()
            .zones
            .get(&zone.to_ascii_lowercase())
            .map(|z| z.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder.records()
    }

    /// The requests that change records (add, modify, delete, status), failed ones included.
    pub fn mutations(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(|r| MUTATING_PATHS.contains(&r.path.as_str()))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.recorder.clear();
    }
}

fn failed(description: &str) -> Response {
    json_ok(json!({"status": "Failed", "statusDescription": description}))
}

fn success(description: &str) -> Response {
    json_ok(json!({"status": "Success", "statusDescription": description}))
}

/// Always 200, as the real API answers.
fn json_ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Every parameter: the query string, then a form or JSON body.
fn params(query: Option<&str>, headers: &HeaderMap, body: &Bytes) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(q) = query {
        out.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    let json_body = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json_body {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(k, v);
            }
        }
    } else if !body.is_empty() {
        out.extend(url::form_urlencoded::parse(body).into_owned());
    }
    out
}

async fn dispatch(
    State(mock): State<CloudnsMock>,
    method: Method,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let p = params(query.as_deref(), &headers, &body);
    let resp = answer(&mock, &name, &p);
    mock.shared.recorder.push(RequestRecord {
        method: method.to_string(),
        path: format!("/dns/{name}"),
        query,
        status: resp.status().as_u16(),
        arrived,
        answered: Instant::now(),
    });
    resp
}

fn answer(mock: &CloudnsMock, method: &str, p: &BTreeMap<String, String>) -> Response {
    let mut s = mock.state();
    if let Some(limit) = s.per_second {
        let now = Instant::now();
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            s.recent.pop_front();
        }
        if s.recent.len() >= limit as usize {
            return failed(&format!(
                "Too many requests. The limit is {limit} requests per second per IP address."
            ));
        }
        s.recent.push_back(now);
    }
    let password_ok = p.get("auth-password") == Some(&s.password);
    let user_ok = p.get("auth-id") == Some(&s.auth_id)
        || p.get("sub-auth-id") == Some(&s.auth_id)
        || (s.sub_user.is_some() && p.get("sub-auth-user") == s.sub_user.as_ref());
    if !(password_ok && user_ok) {
        return if p.contains_key("sub-auth-id") || p.contains_key("sub-auth-user") {
            failed("Invalid authentication, incorrect sub-auth-id, sub-auth-user or auth-password.")
        } else {
            failed("Invalid authentication, incorrect auth-id or auth-password.")
        };
    }
    match method {
        "login.json" => success("Success login."),
        "get-available-ttl.json" => json_ok(json!(ALLOWED_TTLS)),
        "list-zones.json" | "get-pages-count.json" => list_zones(&s, method, p),
        "get-zone-info.json" => match zone_of(&s, p) {
            Some(name) => {
                json_ok(json!({"name": name, "type": "master", "zone": "domain", "status": "1"}))
            }
            None => failed("Missing domain-name"),
        },
        "records.json" => records(&s, p),
        "add-record.json" => add_record(&mut s, p),
        "mod-record.json" => mod_record(&mut s, p),
        "delete-record.json" => {
            let Some(zone) = zone_of(&s, p) else {
                return failed("Missing domain-name");
            };
            let id = p.get("record-id").and_then(|v| v.parse::<u64>().ok());
            match id.and_then(|id| s.zones.get_mut(&zone)?.remove(&id)) {
                Some(_) => success("The record was deleted successfully."),
                None => failed("Invalid record-id param."),
            }
        }
        _ => failed("Invalid API method."),
    }
}

fn zone_of(s: &CloudnsState, p: &BTreeMap<String, String>) -> Option<String> {
    let name = p
        .get("domain-name")?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    s.zones.contains_key(&name).then_some(name)
}

fn list_zones(s: &CloudnsState, method: &str, p: &BTreeMap<String, String>) -> Response {
    let rows = p.get("rows-per-page").and_then(|v| v.parse::<usize>().ok());
    let Some(rows) = rows.filter(|r| [10, 20, 30, 50, 100].contains(r)) else {
        return failed("Wrong or missing required parameter 'rows-per-page'.");
    };
    let search = p.get("search").map(|s| s.to_ascii_lowercase());
    let names: Vec<&String> = s
        .zones
        .keys()
        .filter(|n| search.as_ref().is_none_or(|q| n.contains(q.as_str())))
        .collect();
    if method == "get-pages-count.json" {
        return json_ok(json!(names.len().div_ceil(rows)));
    }
    let Some(page) = p
        .get("page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|p| *p >= 1)
    else {
        return failed("Missing required parameter 'page'.");
    };
    let items: Vec<Value> = names
        .iter()
        .skip((page - 1) * rows)
        .take(rows)
        .map(|n| {
            json!({"name": n, "type": "master", "zone": "domain", "status": "1",
                "serial": "2026010101", "isUpdated": 0, "hasBulk": false, "group": "None"})
        })
        .collect();
    json_ok(Value::Array(items))
}

fn records(s: &CloudnsState, p: &BTreeMap<String, String>) -> Response {
    let Some(zone) = zone_of(s, p) else {
        return failed("Missing domain-name");
    };
    let host = p.get("host").map(|h| h.to_ascii_lowercase());
    let kind = p.get("type").map(|t| t.to_ascii_uppercase());
    let matching: serde_json::Map<String, Value> = s.zones[&zone]
        .iter()
        .filter(|(_, r)| host.as_ref().is_none_or(|h| r["host"] == h.as_str()))
        .filter(|(_, r)| kind.as_ref().is_none_or(|k| r["type"] == k.as_str()))
        .map(|(id, r)| (id.to_string(), r.clone()))
        .collect();
    if matching.is_empty() {
        // PHP's empty array.
        return json_ok(if s.empty_as_object {
            json!({})
        } else {
            json!([])
        });
    }
    json_ok(Value::Object(matching))
}

/// Checks and reads what add and modify share: host, record, TTL and the MX/SRV numbers.
fn record_fields(
    record_type: &str,
    p: &BTreeMap<String, String>,
) -> Result<serde_json::Map<String, Value>, &'static str> {
    let ttl = p
        .get("ttl")
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or("Missing required parameter 'ttl'.")?;
    if !ALLOWED_TTLS.contains(&ttl) {
        return Err("Invalid TTL. Choose from the list of the values we support.");
    }
    let record = p
        .get("record")
        .filter(|r| !r.is_empty())
        .ok_or("Missing required parameter 'record'.")?;
    let host = p.get("host").ok_or("Missing required parameter 'host'.")?;
    let mut fields = serde_json::Map::new();
    fields.insert("host".into(), json!(host.to_ascii_lowercase()));
    fields.insert("record".into(), json!(record));
    fields.insert("ttl".into(), json!(ttl.to_string()));
    let needs: &[&str] = match record_type {
        "MX" => &["priority"],
        "SRV" => &["priority", "weight", "port"],
        _ => &[],
    };
    for name in needs {
        let v = p
            .get(*name)
            .filter(|v| v.parse::<u32>().is_ok())
            .ok_or("Missing or invalid priority, weight or port.")?;
        fields.insert((*name).into(), json!(v));
    }
    Ok(fields)
}

fn add_record(s: &mut CloudnsState, p: &BTreeMap<String, String>) -> Response {
    let Some(zone) = zone_of(s, p) else {
        return failed("Missing domain-name");
    };
    let Some(record_type) = p.get("record-type").map(|t| t.to_ascii_uppercase()) else {
        return failed("Missing required parameter 'record-type'.");
    };
    let fields = match record_fields(&record_type, p) {
        Ok(f) => f,
        Err(why) => return failed(why),
    };
    s.next_id += 1;
    let id = s.next_id;
    let mut record = json!({"id": id.to_string(), "type": record_type, "dynamicurl_status": 0,
        "failover": "0", "status": 1});
    for (k, v) in fields {
        record[k] = v;
    }
    s.zones.get_mut(&zone).expect("checked").insert(id, record);
    json_ok(
        json!({"status": "Success", "statusDescription": "The record was added successfully.",
        "data": {"id": id}}),
    )
}

fn mod_record(s: &mut CloudnsState, p: &BTreeMap<String, String>) -> Response {
    let Some(zone) = zone_of(s, p) else {
        return failed("Missing domain-name");
    };
    let id = p.get("record-id").and_then(|v| v.parse::<u64>().ok());
    let Some(record_type) = id
        .and_then(|id| s.zones[&zone].get(&id))
        .map(|r| r["type"].as_str().unwrap_or_default().to_string())
    else {
        return failed("Invalid record-id param.");
    };
    let fields = match record_fields(&record_type, p) {
        Ok(f) => f,
        Err(why) => return failed(why),
    };
    let record = s
        .zones
        .get_mut(&zone)
        .and_then(|z| z.get_mut(&id.expect("checked")))
        .expect("checked");
    for (k, v) in fields {
        record[k] = v;
    }
    success("The record was modified successfully.")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn call(mock: &CloudnsMock, method: &str, uri: &str, body: Option<&str>) -> Value {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Body::from(body.unwrap_or_default().to_string()))
            .unwrap();
        let resp = mock.router().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "ClouDNS always answers 200");
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    const AUTH: &str = "auth-id=4711&auth-password=mock-cloudns-password";

    #[tokio::test]
    async fn failures_are_200_with_failed_and_records_are_a_php_array() {
        let mock = CloudnsMock::new();
        mock.add_zone("example.com");
        let v = call(
            &mock,
            "GET",
            "/dns/records.json?domain-name=example.com&auth-id=1&auth-password=x",
            None,
        )
        .await;
        assert_eq!(v["status"], "Failed");
        let v = call(
            &mock,
            "GET",
            &format!("/dns/records.json?domain-name=example.com&{AUTH}"),
            None,
        )
        .await;
        assert_eq!(v, json!([]));
        mock.set_empty_records_as_object(true);
        let v = call(
            &mock,
            "GET",
            &format!("/dns/records.json?domain-name=example.com&{AUTH}"),
            None,
        )
        .await;
        assert_eq!(v, json!({}));
        // JSON body parameters, a host stored lowercased, an integer id answered.
        let v = call(&mock, "POST", "/dns/add-record.json", Some(
            r#"{"auth-id":"4711","auth-password":"mock-cloudns-password","domain-name":"example.com",
               "record-type":"A","host":"WWW","record":"192.0.2.1","ttl":3600}"#)).await;
        assert_eq!(v["status"], "Success");
        let id = v["data"]["id"].as_u64().expect("an integer id");
        let v = call(
            &mock,
            "GET",
            &format!("/dns/records.json?domain-name=example.com&{AUTH}"),
            None,
        )
        .await;
        let r = &v[id.to_string()];
        assert_eq!(r["host"], "www");
        assert_eq!(r["ttl"], "3600");
        assert_eq!(r["status"], 1);
        let v = call(&mock, "POST", &format!("/dns/mod-record.json?domain-name=example.com&record-id={id}&host=www&record=192.0.2.2&ttl=123&{AUTH}"), None).await;
        assert_eq!(
            v["statusDescription"],
            "Invalid TTL. Choose from the list of the values we support."
        );
        let v = call(
            &mock,
            "POST",
            &format!("/dns/delete-record.json?domain-name=nope.org&record-id={id}&{AUTH}"),
            None,
        )
        .await;
        assert_eq!(v["statusDescription"], "Missing domain-name");
        assert_eq!(mock.mutations().len(), 3);
    }

    #[tokio::test]
    async fn zones_need_page_and_rows_and_the_rate_limit_is_a_failed_200() {
        let mock = CloudnsMock::new();
        for i in 0..25 {
            mock.add_zone(&format!("zone{i:02}.example"));
        }
        let v = call(
            &mock,
            "GET",
            &format!("/dns/list-zones.json?rows-per-page=10&{AUTH}"),
            None,
        )
        .await;
        assert_eq!(v["statusDescription"], "Missing required parameter 'page'.");
        let v = call(
            &mock,
            "GET",
            &format!("/dns/list-zones.json?page=3&rows-per-page=10&{AUTH}"),
            None,
        )
        .await;
        assert_eq!(v.as_array().unwrap().len(), 5);
        mock.set_rate_limit(Some(2));
        let _ = call(&mock, "GET", &format!("/dns/login.json?{AUTH}"), None).await;
        let v = call(&mock, "GET", &format!("/dns/login.json?{AUTH}"), None).await;
        assert_eq!(v["status"], "Failed");
        assert!(
            v["statusDescription"]
                .as_str()
                .unwrap()
                .contains("per second")
        );
    }
}
