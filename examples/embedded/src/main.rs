//! Embedding Cairn: register Rust functions, start a run on the embedded SQLite store, await
//! its result. Run it with `cargo run -p cairn-example-embedded`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cairn_core::dsl::{load_str, SourceFormat};
use cairn_core::{ErrorKind, WorkflowError};
use cairn_runtime::{RunOutcome, Runtime};
use serde_json::json;

const WORKFLOW: &str = r#"
document: { dsl: '1.0.3', namespace: shop, name: checkout, version: '1.0.0' }
do:
  - reserve:
      call: reserveStock
      with: { sku: '${ .sku }', qty: '${ .qty }' }
      output:
        as: '${ $input + { reservation: .reservation } }'
  - charge:
      try:
        - pay:
            call: chargeCard
            with: { amount: '${ .price }' }
      catch:
        errors:
          with: { status: 503 }
        retry:
          delay: { milliseconds: 50 }
          backoff: { exponential: {} }
          limit: { attempt: { count: 4 } }
  - receipt:
      set:
        paid: '${ .charged }'
        payment: '${ .reference }'
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = format!("sqlite://{}", dir.path().join("cairn.db").display());
    let flaky = Arc::new(AtomicU32::new(0));

    let runtime = Runtime::builder()
        .store_url(store)
        .function("reserveStock", |call| async move {
            // A real application would talk to its inventory here. The idempotency key is the
            // same if this call is re-sent after a crash, so it can be used to deduplicate.
            Ok(json!({ "reservation": format!("R-{}", call.ctx.idempotency_key), "sku": call.arguments["sku"] }))
        })
        .function("chargeCard", move |call| {
            let flaky = flaky.clone();
            async move {
                // The first two attempts fail as a payment provider under load would.
                if flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(WorkflowError::new(ErrorKind::Communication, "provider busy")
                        .with_status(503));
                }
                Ok(json!({ "charged": call.arguments["amount"], "reference": "PAY-42" }))
            }
        })
        .build()
        .await?;

    let def = load_str(WORKFLOW, SourceFormat::Yaml)?;
    let (run_id, outcome) = runtime
        .run(def, json!({ "sku": "W-1", "qty": 2, "price": 80 }))
        .await?;
    match outcome {
        RunOutcome::Completed(output) => println!("run {run_id} completed: {output}"),
        other => anyhow::bail!("run {run_id} did not complete: {other:?}"),
    }
    for e in runtime.history(&run_id).await? {
        println!("{:>3} {}", e.sequence, e.event.event_type());
    }
    runtime.shutdown().await;
    Ok(())
}
