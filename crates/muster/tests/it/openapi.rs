//! The committed OpenAPI document matches the code. Run with `UPDATE_OPENAPI=1` to rewrite it
//! after an intended API change, and review the diff.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = muster_server::openapi_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .expect("docs/openapi.json is missing: run the tests once with UPDATE_OPENAPI=1");
    assert!(
        committed == generated,
        "docs/openapi.json differs from the code's API: run `UPDATE_OPENAPI=1 cargo nextest run -p muster --test it openapi` and commit the result"
    );
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let (store, _dir) = crate::support::sqlite_store().await;
    let app = crate::harness::TestApp::new(store).await;
    let r = app
        .call(axum::http::Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        serde_json::to_value(muster_server::openapi()).unwrap()
    );
    assert_eq!(
        r.body["paths"]["/api/infrastructure/assets/{id}/organization"]["put"]["tags"][0],
        "assets"
    );
}
