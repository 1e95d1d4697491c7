//! `muster assets list|get|create|update|delete` against a running server.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::api::ApiArgs;
use crate::output::{Output, print_json, table};

#[derive(Debug, Subcommand)]
pub enum AssetsCommand {
    /// Assets matching the filters (one page, or --all).
    List(ListArgs),
    /// One asset.
    Get {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create an asset from flags, or from a JSON body (--json FILE, `-` for stdin).
    Create(WriteArgs),
    /// Change fields of an asset (a partial update).
    Update {
        id: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete an asset.
    Delete {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub organization_id: Option<String>,
    #[arg(long)]
    pub asset_type: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub health: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    /// `key=value`, repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    /// Hetzner's syntax: `env=prod,!legacy`.
    #[arg(long)]
    pub label_selector: Option<String>,
    /// Name, hostname or address contains this.
    #[arg(long)]
    pub q: Option<String>,
    #[arg(long)]
    pub page: Option<u32>,
    #[arg(long)]
    pub per_page: Option<u32>,
    /// Every page.
    #[arg(long, conflicts_with = "page")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct WriteArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The request body as JSON (a file, or `-` for stdin); flags are added to it.
    #[arg(long)]
    pub json: Option<String>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub asset_type: Option<String>,
    #[arg(long)]
    pub organization_id: Option<String>,
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// An address (public unless private by its range); repeatable.
    #[arg(long = "ip")]
    pub ips: Vec<String>,
    /// `key=value`, repeatable.
    #[arg(long)]
    pub label: Vec<String>,
    #[arg(long)]
    pub notes: Option<String>,
}

impl WriteArgs {
    fn body(&self) -> anyhow::Result<Value> {
        let mut body = match self.json.as_deref() {
            None => Map::new(),
            Some(src) => {
                let text = if src == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(src)
                        .map_err(|e| anyhow::anyhow!("reading {src}: {e}"))?
                };
                match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(m)) => m,
                    Ok(_) => anyhow::bail!("--json must hold a JSON object"),
                    Err(e) => anyhow::bail!("--json is not JSON: {e}"),
                }
            }
        };
        for (k, v) in [
            ("name", &self.name),
            ("asset_type", &self.asset_type),
            ("organization_id", &self.organization_id),
            ("status", &self.status),
            ("hostname", &self.hostname),
            ("notes", &self.notes),
        ] {
            if let Some(v) = v {
                body.insert(k.into(), json!(v));
            }
        }
        if !self.ips.is_empty() {
            body.insert("ip_addresses".into(), json!(self.ips));
        }
        if !self.label.is_empty() {
            body.insert("labels".into(), Value::Object(labels(&self.label)?));
        }
        Ok(Value::Object(body))
    }
}

fn labels(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), json!(v)))
                .ok_or_else(|| anyhow::anyhow!("a label is `key=value`, not `{p}`"))
        })
        .collect()
}

pub async fn run(cmd: AssetsCommand, output: Output) -> anyhow::Result<ExitCode> {
    match cmd {
        AssetsCommand::List(a) => {
            let client = a.api.client()?;
            let mut q: Vec<(String, String)> = Vec::new();
            for (k, v) in [
                ("organization_id", &a.organization_id),
                ("asset_type", &a.asset_type),
                ("status", &a.status),
                ("health", &a.health),
                ("provider", &a.provider),
                ("label_selector", &a.label_selector),
                ("q", &a.q),
            ] {
                if let Some(v) = v {
                    q.push((k.into(), v.clone()));
                }
            }
            q.extend(a.label.iter().map(|l| ("label".to_string(), l.clone())));
            let (assets, body) = if a.all {
                let all = client.all_assets(&q).await?;
                (all.clone(), json!({"assets": all}))
            } else {
                q.extend(a.page.map(|p| ("page".to_string(), p.to_string())));
                q.extend(a.per_page.map(|p| ("per_page".to_string(), p.to_string())));
                let body = client.list_assets(&q).await?;
                (body["assets"].as_array().cloned().unwrap_or_default(), body)
            };
            if output.is_json() {
                print_json(&body)?;
            } else {
                print!("{}", render_list(&assets, &body["meta"], None));
            }
        }
        AssetsCommand::Get { id, api } => {
            let asset = api.client()?.get_asset(&id).await?;
            show(&asset, output)?;
        }
        AssetsCommand::Create(w) => {
            let asset = w.api.client()?.create_asset(&w.body()?).await?;
            show(&asset, output)?;
        }
        AssetsCommand::Update { id, write } => {
            let asset = write
                .api
                .client()?
                .update_asset(&id, &write.body()?)
                .await?;
            show(&asset, output)?;
        }
        AssetsCommand::Delete { id, api } => {
            api.client()?.delete_asset(&id).await?;
            if output.is_json() {
                print_json(&json!({"deleted": id}))?;
            } else {
                println!("Deleted {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn addresses(asset: &Value) -> String {
    asset["ip_addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["address"].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn render_list(assets: &[Value], meta: &Value, width: Option<u16>) -> String {
    let mut t = table(
        &[
            "ID",
            "NAME",
            "TYPE",
            "STATUS",
            "HEALTH",
            "ADDRESSES",
            "PROVIDER",
        ],
        width,
    );
    for a in assets {
        t.add_row(vec![
            text(&a["id"]),
            text(&a["name"]),
            text(&a["asset_type"]),
            text(&a["status"]),
            text(&a["health"]),
            addresses(a),
            text(&a["provider"]),
        ]);
    }
    let total = meta["total"]
        .as_u64()
        .map_or(String::new(), |t| format!(" of {t}"));
    format!("{t}\n{} assets{total}\n", assets.len())
}

fn show(asset: &Value, output: Output) -> anyhow::Result<()> {
    if output.is_json() {
        return print_json(asset);
    }
    let mut t = table(&["FIELD", "VALUE"], None);
    for k in [
        "id",
        "name",
        "asset_type",
        "status",
        "health",
        "organization_id",
        "provider",
        "external_id",
        "hostname",
    ] {
        t.add_row(vec![k.to_string(), text(&asset[k])]);
    }
    t.add_row(vec!["ip_addresses".to_string(), addresses(asset)]);
    let labels = asset["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    t.add_row(vec!["labels".to_string(), labels]);
    for k in ["notes", "last_health_check_at", "created_at", "updated_at"] {
        t.add_row(vec![k.to_string(), text(&asset[k])]);
    }
    println!("{t}");
    Ok(())
}
