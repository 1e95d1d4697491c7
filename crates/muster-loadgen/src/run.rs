//! The frame of a run: the Tokio runtime, the scratch PostgreSQL database, an overall deadline,
//! Ctrl-C/SIGTERM, and printing the report. The measuring task owns the server guard, so every
//! way out (success, error, panic, deadline, signal) drops it and the server is killed.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::server::ScratchDatabase;

/// What a run hands back to print.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub markdown: String,
    pub json: Value,
    /// Requests failed or a target was missed badly enough to say so in the exit status.
    pub errors: u64,
}

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub struct Storage {
    /// A fresh scratch database on this admin URL; `None`: SQLite.
    pub postgres_admin_url: Option<String>,
    /// Keep the scratch database afterwards.
    pub keep: bool,
}

/// Builds the runtime (`threads` workers, default one per CPU), runs `bench` on the chosen
/// storage within `deadline`, and prints its outcome as Markdown or JSON.
pub fn main<F, Fut>(
    name: &str,
    json: bool,
    threads: Option<usize>,
    storage: Storage,
    deadline: Duration,
    bench: F,
) -> ExitCode
where
    F: FnOnce(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(t) = threads {
        builder.worker_threads(t.max(1));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(frame(name, storage, deadline, bench));
    // Tasks still holding connections go now, not at an arbitrary later point.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(o) => {
            if json {
                match serde_json::to_string_pretty(&o.json) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("{name}: {e}"),
                }
            } else {
                print!("{}", o.markdown);
            }
            if o.errors > 0 {
                eprintln!("{name}: {} requests failed", o.errors);
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn frame<F, Fut>(
    name: &str,
    storage: Storage,
    deadline: Duration,
    bench: F,
) -> anyhow::Result<Outcome>
where
    F: FnOnce(Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<Outcome>> + Send + 'static,
{
    let scratch = match &storage.postgres_admin_url {
        Some(admin) => {
            let db = ScratchDatabase::create(admin).await?;
            eprintln!("{name}: created database {}", db.name);
            Some(db)
        }
        None => None,
    };
    let url = scratch.as_ref().map(|d| d.url.clone());
    let mut task = tokio::spawn(bench(url));
    let result = tokio::select! {
        r = &mut task => match r {
            Ok(r) => r,
            Err(e) if e.is_panic() => Err(anyhow::anyhow!("the benchmark panicked")),
            Err(e) => Err(anyhow::anyhow!("the benchmark task failed: {e}")),
        },
        _ = tokio::time::sleep(deadline) => {
            task.abort();
            // Waits until the task is dropped, and with it the server guard.
            let _ = task.await;
            Err(anyhow::anyhow!("the run exceeded its deadline of {deadline:?}"))
        }
        _ = interrupted() => {
            task.abort();
            let _ = task.await;
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    if let Some(db) = scratch {
        if storage.keep {
            eprintln!("{name}: kept database {} ({})", db.name, db.url);
        } else if let Err(e) = db.drop_now().await {
            eprintln!("{name}: could not drop the scratch database: {e:#}");
        } else {
            eprintln!("{name}: dropped the scratch database");
        }
    }
    result
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A progress line on stderr.
pub fn progress(name: &str, msg: impl std::fmt::Display) {
    eprintln!("{name}: {msg}");
}
