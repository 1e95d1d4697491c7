//! `/assets`: the list (the API's filters, sorting and pages, read with the same query), and
//! creating and editing an asset through the API, with its field-level errors beside the
//! inputs.

use std::collections::HashMap;

use askama::Template;
use axum::Extension;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use muster_domain::{Action, Asset, AssetStatus, AssetType, Health};
use muster_server::AppState;
use muster_server::api::assets::AssetListParams;
use muster_store::AssetSortField;
use serde_json::{Map, Value, json};

use super::{OrgNames, organizations};
use crate::api::Api;
use crate::error::PageError;
use crate::session::{CheckedForm, Viewer};
use crate::view::{AssetRow, Choice, Chrome, Fields, render};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets", get(list))
        .route("/assets/new", get(new_form).post(create))
        .route("/assets/{id}/edit", get(edit_form).post(update))
}

#[derive(Template)]
#[template(path = "assets.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<AssetRow>,
    organizations: Vec<Choice>,
    types: Vec<Choice>,
    statuses: Vec<Choice>,
    healths: Vec<Choice>,
    sorts: Vec<Choice>,
    q: String,
    label: String,
    summary: String,
    prev: Option<String>,
    next: Option<String>,
    can_create: bool,
}

fn with_blank<'a>(
    blank: &'a str,
    items: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str)> {
    std::iter::once(("", blank)).chain(items).collect()
}

async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    uri: Uri,
) -> Result<Response, PageError> {
    let fields = Fields::from_query(uri.query());
    // Blank choices of the filter form mean "any": drop them before the API's parser sees them.
    let cleaned = fields.to_query(&[]);
    let params: AssetListParams = serde_html_form::from_str(&cleaned)
        .map_err(|e| PageError::bad_request(format!("unreadable filters: {e}")))?;
    let query = params.into_query(&viewer.caller)?;
    let page = state.store.list_assets(&query).await?;
    let orgs = organizations(&state, &viewer).await?;
    let names = OrgNames::new(&orgs);
    let rows: Vec<AssetRow> = page
        .items
        .iter()
        .map(|a| AssetRow::new(a, |o| names.name(o)))
        .collect();
    let req = query.page;
    let first = req.offset() + 1;
    let last = req.offset() + rows.len() as i64;
    let summary = if rows.is_empty() {
        "No assets match.".to_string()
    } else if page.total > muster_store::query::COUNT_LIMIT {
        format!("{first}–{last} of more than 1,000")
    } else {
        format!("{first}–{last} of {}", page.total)
    };
    let link = |p: u32| {
        let rest = fields.to_query(&["page"]);
        if rest.is_empty() {
            format!("/assets?page={p}")
        } else {
            format!("/assets?{rest}&page={p}")
        }
    };
    let prev = (req.page > 1).then(|| link(req.page - 1));
    let next = (!page.is_last(req)).then(|| link(req.page + 1));
    let org_items: Vec<(&str, &str)> = orgs
        .iter()
        .map(|o| (o.id.as_str(), o.name.as_str()))
        .collect();
    let sorts: Vec<(&str, &str)> = AssetSortField::ALL
        .iter()
        .flat_map(|(name, _)| [(*name, *name)])
        .collect();
    let descending: Vec<(String, String)> = AssetSortField::ALL
        .iter()
        .map(|(name, _)| (format!("-{name}"), format!("{name} (descending)")))
        .collect();
    let mut sort_choices = Choice::list(sorts, fields.get("sort"));
    sort_choices.extend(Choice::list(
        descending.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        fields.get("sort"),
    ));
    render(&ListPage {
        can_create: viewer.caller.can_somewhere(Action::Create),
        chrome: Chrome::new(&viewer, "assets"),
        rows,
        organizations: Choice::list(with_blank("any", org_items), fields.get("organization_id")),
        types: Choice::list(
            with_blank(
                "any",
                AssetType::ALL.iter().map(|t| (t.as_str(), t.as_str())),
            ),
            fields.get("asset_type"),
        ),
        statuses: Choice::list(
            with_blank(
                "any",
                AssetStatus::ALL.iter().map(|t| (t.as_str(), t.as_str())),
            ),
            fields.get("status"),
        ),
        healths: Choice::list(
            with_blank("any", Health::ALL.iter().map(|t| (t.as_str(), t.as_str()))),
            fields.get("health"),
        ),
        sorts: sort_choices,
        q: fields.text("q"),
        label: fields.text("label"),
        summary,
        prev,
        next,
    })
}

/// One input of the asset form.
pub struct Input {
    pub name: &'static str,
    pub label: &'static str,
    pub kind: &'static str,
    pub value: String,
    pub error: Option<String>,
    pub hint: &'static str,
}

/// A `<select>` of the asset form.
pub struct Select {
    pub name: &'static str,
    pub label: &'static str,
    pub choices: Vec<Choice>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "asset_form.html")]
struct FormPage {
    chrome: Chrome,
    title: String,
    action: String,
    selects: Vec<Select>,
    inputs: Vec<Input>,
    error: Option<String>,
}

const TEXT_FIELDS: &[(&str, &str, &str, &str)] = &[
    ("name", "Name", "text", ""),
    ("hostname", "Hostname", "text", ""),
    (
        "ip_addresses",
        "IP addresses",
        "text",
        "Separated by commas",
    ),
    ("project", "Project", "text", ""),
    ("provider", "Provider", "text", ""),
    ("server_type", "Server type", "text", ""),
    ("cpu_cores", "CPU cores", "text", ""),
    ("memory_gb", "Memory (GB)", "text", ""),
    ("disk_gb", "Disk (GB)", "text", ""),
    ("datacenter", "Datacenter", "text", ""),
    ("location", "Location", "text", ""),
    ("labels", "Labels", "textarea", "One key=value a line"),
    ("notes", "Notes", "textarea", ""),
];

/// The form's values from an asset.
fn values_of(a: &Asset) -> HashMap<&'static str, String> {
    let s = &a.spec;
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let num = |v: Option<f64>| v.map(|n| n.to_string()).unwrap_or_default();
    HashMap::from([
        ("name", s.name.clone()),
        ("asset_type", s.asset_type.as_str().to_string()),
        ("status", s.status.as_str().to_string()),
        ("organization_id", opt(&s.organization_id)),
        ("hostname", opt(&s.hostname)),
        (
            "ip_addresses",
            s.ip_addresses
                .iter()
                .map(|i| i.address.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("project", opt(&s.project)),
        ("provider", opt(&s.provider)),
        ("server_type", opt(&s.server_type)),
        (
            "cpu_cores",
            s.cpu_cores.map(|n| n.to_string()).unwrap_or_default(),
        ),
        ("memory_gb", num(s.memory_gb)),
        ("disk_gb", num(s.disk_gb)),
        ("datacenter", opt(&s.datacenter)),
        ("location", opt(&s.location)),
        ("labels", labels_text(&s.labels)),
        ("notes", opt(&s.notes)),
    ])
}

pub fn labels_text(labels: &muster_domain::label::Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key=value` lines as a JSON object; a line without `=` is an error.
pub fn labels_json(text: &str) -> Result<Value, String> {
    let mut m = Map::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("`{line}` should be key=value"))?;
        m.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
    }
    Ok(Value::Object(m))
}

/// A number when it reads as one; otherwise the text, for the API to name the field.
fn number(v: &str) -> Value {
    v.parse::<u64>()
        .map(Value::from)
        .or_else(|_| v.parse::<f64>().map(Value::from))
        .unwrap_or_else(|_| Value::String(v.to_string()))
}

/// The API body of a submitted asset form (blank fields are `null`); labels that cannot be read
/// are an error of the form itself.
fn body_of(fields: &Fields) -> (Value, HashMap<String, String>) {
    let mut body = Map::new();
    let mut errors = HashMap::new();
    body.insert("name".into(), json!(fields.get("name").unwrap_or_default()));
    for key in ["asset_type", "status"] {
        if let Some(v) = fields.get(key) {
            body.insert(key.into(), json!(v));
        }
    }
    for key in [
        "organization_id",
        "hostname",
        "project",
        "provider",
        "server_type",
        "datacenter",
        "location",
        "notes",
    ] {
        body.insert(key.into(), json!(fields.get(key)));
    }
    for key in ["cpu_cores", "memory_gb", "disk_gb"] {
        body.insert(key.into(), fields.get(key).map_or(Value::Null, number));
    }
    let ips: Vec<&str> = fields
        .get("ip_addresses")
        .unwrap_or_default()
        .split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    body.insert("ip_addresses".into(), json!(ips));
    match labels_json(fields.raw("labels").unwrap_or_default()) {
        Ok(l) => {
            body.insert("labels".into(), l);
        }
        Err(e) => {
            errors.insert("labels".to_string(), e);
        }
    }
    (Value::Object(body), errors)
}

async fn form_page(
    state: &AppState,
    viewer: &Viewer,
    title: String,
    action: String,
    values: &HashMap<&'static str, String>,
    errors: &HashMap<String, String>,
    error: Option<String>,
) -> Result<FormPage, PageError> {
    let orgs = organizations(state, viewer).await?;
    let org_items: Vec<(&str, &str)> = std::iter::once(("", "(none)"))
        .chain(orgs.iter().map(|o| (o.id.as_str(), o.name.as_str())))
        .collect();
    let value = |k: &str| values.get(k).map(String::as_str);
    let selects = vec![
        Select {
            name: "asset_type",
            label: "Type",
            choices: Choice::list(
                AssetType::ALL.iter().map(|t| (t.as_str(), t.as_str())),
                value("asset_type"),
            ),
            error: errors.get("asset_type").cloned(),
        },
        Select {
            name: "status",
            label: "Status",
            choices: Choice::list(
                AssetStatus::ALL.iter().map(|t| (t.as_str(), t.as_str())),
                value("status").or(Some("unknown")),
            ),
            error: errors.get("status").cloned(),
        },
        Select {
            name: "organization_id",
            label: "Organization",
            choices: Choice::list(org_items, value("organization_id").or(Some(""))),
            error: errors.get("organization_id").cloned(),
        },
    ];
    let inputs = TEXT_FIELDS
        .iter()
        .map(|(name, label, kind, hint)| Input {
            name,
            label,
            kind,
            value: values.get(name).cloned().unwrap_or_default(),
            error: errors.get(*name).cloned(),
            hint,
        })
        .collect();
    Ok(FormPage {
        chrome: Chrome::new(viewer, "assets"),
        title,
        action,
        selects,
        inputs,
        error,
    })
}

fn submitted(fields: &Fields) -> HashMap<&'static str, String> {
    ["asset_type", "status", "organization_id"]
        .iter()
        .chain(TEXT_FIELDS.iter().map(|(n, ..)| n))
        .map(|k| (*k, fields.raw(k).unwrap_or_default().to_string()))
        .collect()
}

async fn new_form(State(state): State<AppState>, viewer: Viewer) -> Result<Response, PageError> {
    if !viewer.caller.can_somewhere(Action::Create) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "you may not create assets in any organization",
        ));
    }
    let page = form_page(
        &state,
        &viewer,
        "New asset".into(),
        "/assets/new".into(),
        &HashMap::new(),
        &HashMap::new(),
        None,
    )
    .await?;
    render(&page)
}

/// Sends the form to the API; on success goes to the asset, else shows the form again with
/// the API's field errors.
#[allow(clippy::too_many_arguments)]
async fn submit(
    state: &AppState,
    viewer: &Viewer,
    api: &Api,
    method: Method,
    path: String,
    title: String,
    action: String,
    fields: &Fields,
) -> Result<Response, PageError> {
    let (body, mut errors) = body_of(fields);
    let reply = if errors.is_empty() {
        Some(
            api.send(&viewer.credentials, method, &path, Some(body))
                .await?,
        )
    } else {
        None
    };
    let (status, message) = match &reply {
        Some(r) if r.status.is_success() => {
            let id = r.body["id"].as_str().unwrap_or_default();
            return Ok(Redirect::to(&format!("/assets/{id}")).into_response());
        }
        Some(r) => {
            errors.extend(r.field_errors());
            (r.status, r.message())
        }
        None => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "some fields are not valid".to_string(),
        ),
    };
    let page = form_page(
        state,
        viewer,
        title,
        action,
        &submitted(fields),
        &errors,
        Some(message),
    )
    .await?;
    let mut r = render(&page)?;
    *r.status_mut() = status;
    Ok(r)
}

async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    CheckedForm(fields): CheckedForm,
) -> Result<Response, PageError> {
    // The API decides; the console only shows its answer.
    viewer.caller.allow_own();
    submit(
        &state,
        &viewer,
        &api,
        Method::POST,
        "/api/infrastructure/assets".into(),
        "New asset".into(),
        "/assets/new".into(),
        &fields,
    )
    .await
}

/// The asset, if the viewer may see it (404 otherwise, as the API answers).
pub async fn visible_asset(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
) -> Result<Asset, PageError> {
    let asset = state.store.get_asset(id).await.map_err(|e| match e {
        muster_store::StoreError::NotFound => PageError::not_found("asset"),
        other => other.into(),
    })?;
    viewer
        .caller
        .require_visible(asset.spec.organization_id.as_deref(), "asset")?;
    Ok(asset)
}

async fn edit_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let asset = visible_asset(&state, &viewer, &id).await?;
    let page = form_page(
        &state,
        &viewer,
        format!("Edit {}", asset.spec.name),
        format!("/assets/{id}/edit"),
        &values_of(&asset),
        &HashMap::new(),
        None,
    )
    .await?;
    render(&page)
}

async fn update(
    State(state): State<AppState>,
    viewer: Viewer,
    Extension(api): Extension<Api>,
    Path(id): Path<String>,
    CheckedForm(fields): CheckedForm,
) -> Result<Response, PageError> {
    let asset = visible_asset(&state, &viewer, &id).await?;
    submit(
        &state,
        &viewer,
        &api,
        Method::PATCH,
        format!("/api/infrastructure/assets/{id}"),
        format!("Edit {}", asset.spec.name),
        format!("/assets/{id}/edit"),
        &fields,
    )
    .await
}
