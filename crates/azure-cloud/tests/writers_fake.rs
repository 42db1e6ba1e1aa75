//! The route-table writer over the in-memory ARM (`arm::fake`): group commit, 412 handling, injected
//! failures and cancellation, in milliseconds.

use async_trait::async_trait;
use azure_cloud::arm::fake::{FakeArm, Fault};
use azure_cloud::arm::ArmError;
use azure_cloud::config::CloudConfig;
use azure_cloud::routes::{RouteOp, RouteTableWriter};
use azure_cloud::vmset::{NodeIps, NodeVm, VmSet, VmSetError, VmSetRef};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The writer's `submit` never looks nodes up; every lookup is an error so a test would notice one.
struct NoVms;

#[async_trait]
impl VmSet for NoVms {
    async fn node(&self, n: &str) -> Result<Arc<NodeVm>, VmSetError> {
        Err(VmSetError::Invalid(format!("no VM lookups in this test ({n})")))
    }
    async fn node_by_provider_id(&self, p: &str) -> Result<Arc<NodeVm>, VmSetError> {
        Err(VmSetError::Invalid(format!("no VM lookups in this test ({p})")))
    }
    async fn node_ips(&self, _: &NodeVm) -> Result<NodeIps, VmSetError> {
        Err(VmSetError::Invalid("no VM lookups in this test".into()))
    }
    async fn vm_sets(&self) -> Result<Vec<VmSetRef>, VmSetError> {
        Ok(Vec::new())
    }
}

fn writer(fake: &Arc<FakeArm>) -> Arc<RouteTableWriter> {
    let cfg = r#"{"useInstanceMetadata": true, "resourceGroup": "rg", "location": "eastus", "routeTableName": "rt"}"#;
    let (cfg, _) = CloudConfig::parse(cfg, &|_| None).unwrap();
    fake.seed(
        "routeTables",
        "rg",
        "rt",
        json!({"location": "eastus", "properties": {"routes": []}}),
    );
    Arc::new(RouteTableWriter::new(&cfg, fake.clone(), Arc::new(NoVms)))
}

fn create(i: usize) -> RouteOp {
    RouteOp::Create {
        name: format!("node-{i}____10244{i}024"),
        prefix: format!("10.244.{i}.0/24"),
        next_hop: format!("10.240.0.{}", i + 4),
        node: format!("node-{i}"),
    }
}

fn routes(fake: &FakeArm) -> usize {
    fake.resource("routeTables", "rg", "rt")
        .and_then(|t| t.pointer("/properties/routes").and_then(|r| r.as_array()).map(Vec::len))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_burst_is_one_read_and_one_write() {
    let fake = Arc::new(FakeArm::new());
    let w = writer(&fake);
    let all = futures::future::join_all((0..100).map(|i| {
        let w = w.clone();
        async move { w.submit(create(i)).await }
    }))
    .await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(routes(&fake), 100);
    assert_eq!(
        (fake.calls("GET", "routeTables"), fake.calls("PUT", "routeTables")),
        (1, 1)
    );
}

#[tokio::test]
async fn a_412_costs_one_reread_and_the_change_is_applied() {
    let fake = Arc::new(FakeArm::new());
    let w = writer(&fake);
    w.submit(create(1)).await.unwrap();
    // Someone else writes the table: our copy's ETag is stale, the next write gets a 412.
    let theirs = fake.resource("routeTables", "rg", "rt").unwrap();
    fake.seed("routeTables", "rg", "rt", theirs);
    w.submit(create(2)).await.unwrap();
    assert_eq!(routes(&fake), 2);
    assert_eq!(
        fake.calls("PUT", "routeTables"),
        3,
        "one write refused (412), one re-read, one write"
    );
    assert_eq!(fake.calls("GET", "routeTables"), 2);
}

#[tokio::test]
async fn a_failed_write_is_every_callers_error_and_forgets_the_copy() {
    let fake = Arc::new(FakeArm::new());
    let w = writer(&fake);
    fake.fail_next(Fault {
        method: "PUT",
        resource_type: "routeTables",
        error: ArmError::Http {
            operation: "route_table_create_or_update".into(),
            resource: "rt".into(),
            status: 500,
            code: "InternalServerError".into(),
            message: "injected".into(),
        },
    });
    let err = w.submit(create(1)).await.unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    w.submit(create(1)).await.unwrap();
    assert_eq!(
        fake.calls("GET", "routeTables"),
        2,
        "the copy was forgotten after the failure"
    );
    assert_eq!(routes(&fake), 1);
}

#[tokio::test]
async fn a_cancelled_caller_never_strands_the_others() {
    let fake = Arc::new(FakeArm::new());
    let w = writer(&fake);
    fake.set_delay(Duration::from_millis(50));
    let first = tokio::spawn({
        let w = w.clone();
        async move { w.submit(create(0)).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let others: Vec<_> = (1..6)
        .map(|i| {
            let w = w.clone();
            tokio::spawn(async move { w.submit(create(i)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    first.abort();
    for t in others {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("a caller was stranded")
            .unwrap()
            .unwrap();
    }
    let table = fake.resource("routeTables", "rg", "rt").unwrap();
    for i in 1..6 {
        assert!(
            table.to_string().contains(&format!("10.244.{i}.0/24")),
            "route {i} missing"
        );
    }
}
