//! Routes against azure-sim: create/list/delete, batching, legacy names, missing table, unmanaged nodes.

mod common;
use common::cloud_for;

use azure_cloud::provider::{Route, Routes};
use azure_cloud::AzureCloud;
use azure_sim::scenario::{ScaleSetSpec, Scenario};
use azure_sim::AzureSim;
use serde_json::{json, Value};

async fn setup(scenario: &Scenario) -> (AzureSim, AzureCloud, tempfile::TempDir) {
    cloud_for(scenario, json!({})).await
}

fn route(node: &str, cidr: &str) -> Route {
    Route {
        name: String::new(),
        target_node: node.into(),
        destination_cidrs: vec![cidr.into()],
        blackhole: false,
    }
}

fn table_routes(sim: &AzureSim, name: &str) -> Vec<(String, String, String)> {
    let c = sim.cluster();
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/routeTables/{name}",
        c.subscription, c.resource_group
    );
    let t = sim.resource(&id).unwrap_or(Value::Null);
    let mut v: Vec<_> = t["properties"]["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["properties"]["addressPrefix"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["properties"]["nextHopIpAddress"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn route_table_writes(sim: &AzureSim) -> (usize, usize) {
    let calls: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.resource_type.ends_with("routeTables"))
        .collect();
    (
        calls.iter().filter(|c| c.method == "GET").count(),
        calls.iter().filter(|c| c.method == "PUT").count(),
    )
}

/// Puts routes straight into the sim's route table, as an older cluster or another writer left them.
fn seed_routes(sim: &AzureSim, routes: Value) {
    let c = sim.cluster().clone();
    let rt_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/routeTables/{}",
        c.subscription, c.resource_group, c.route_table
    );
    sim.with_store(|s, _| {
        let mut body = s.get(&rt_id).unwrap().body.clone();
        body["properties"]["routes"] = routes;
        s.put(&rt_id, "Microsoft.Network/routeTables", body, 0);
    });
}

#[tokio::test]
async fn create_list_delete_and_legacy_cleanup() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster()).await;
    let c = sim.cluster().clone();
    // A legacy route (plain node name) from an older cluster.
    seed_routes(
        &sim,
        json!([{"name": "k8s-pool2-0", "properties": {"addressPrefix": "10.244.9.0/24", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.240.0.7"}}]),
    );
    cloud
        .create_route("kubernetes", "uid-1", &route("k8s-pool1-vmss000001", "10.244.1.0/24"))
        .await
        .unwrap();
    cloud
        .create_route("kubernetes", "uid-2", &route("k8s-pool2-0", "10.244.9.0/24"))
        .await
        .unwrap();
    assert_eq!(
        table_routes(&sim, &c.route_table),
        vec![
            (
                "k8s-pool1-vmss000001____102441024".to_string(),
                "10.244.1.0/24".to_string(),
                "10.240.0.5".to_string()
            ),
            (
                "k8s-pool2-0____102449024".to_string(),
                "10.244.9.0/24".to_string(),
                "10.240.0.7".to_string()
            ),
        ]
    );
    let listed = cloud.list_routes("kubernetes").await.unwrap();
    let mut nodes: Vec<_> = listed
        .iter()
        .map(|r| (r.target_node.clone(), r.destination_cidrs[0].clone()))
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        vec![
            ("k8s-pool1-vmss000001".to_string(), "10.244.1.0/24".to_string()),
            ("k8s-pool2-0".into(), "10.244.9.0/24".into())
        ]
    );
    // Steady state: re-creating what exists writes nothing.
    sim.reset_calls();
    cloud
        .create_route("kubernetes", "uid-1", &route("k8s-pool1-vmss000001", "10.244.1.0/24"))
        .await
        .unwrap();
    assert_eq!(route_table_writes(&sim).1, 0);
    cloud
        .delete_route("kubernetes", &route("k8s-pool1-vmss000001", "10.244.1.0/24"))
        .await
        .unwrap();
    assert_eq!(table_routes(&sim, &c.route_table).len(), 1);
    // Deleting again is fine.
    cloud
        .delete_route("kubernetes", &route("k8s-pool1-vmss000001", "10.244.1.0/24"))
        .await
        .unwrap();
    // A CIDR of a family the node has no address of is a clear error.
    let err = cloud
        .create_route("kubernetes", "u", &route("k8s-pool2-1", "fd00:10:244::/64"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("has no private IPv6 address"), "{err}");
}

/// S7: 400 new nodes at once → at most 2 route-table PUTs plus the GETs they need.
#[tokio::test]
async fn concurrent_creates_are_batched() {
    let scenario = Scenario {
        scale_sets: vec![ScaleSetSpec {
            name: "pool".into(),
            instances: 400,
            ..Default::default()
        }],
        ..Default::default()
    };
    let (sim, cloud, _d) = setup(&scenario).await;
    // Warm the node caches so only route-table calls remain to count.
    for i in 0..400 {
        let n = azure_cloud::vmset::names::computer_name("pool", i);
        let vm = cloud.vm_set().node(&n).await.unwrap();
        cloud.vm_set().node_ips(&vm).await.unwrap();
    }
    sim.reset_calls();
    let routes: Vec<Route> = (0..400)
        .map(|i| {
            route(
                &azure_cloud::vmset::names::computer_name("pool", i),
                &format!("10.{}.{}.0/24", 100 + i / 256, i % 256),
            )
        })
        .collect();
    let results = futures::future::join_all(routes.iter().map(|r| cloud.create_route("kubernetes", "", r))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(table_routes(&sim, "sim-routes").len(), 400);
    let (gets, puts) = route_table_writes(&sim);
    eprintln!("S7: {gets} GETs, {puts} PUTs");
    assert!(puts <= 2, "{puts} PUTs for 400 concurrent creates (S7)");
    assert!(gets <= 1, "{gets} GETs");
    assert_eq!(sim.arm_calls("PUT"), puts, "no other writes");
    // The route controller lists every pass (10 s): within routeTableCacheTTLInSeconds (120 s) the copy our
    // own write returned answers, so passes cost no ARM call (they cost a GET each before).
    sim.reset_calls();
    for _ in 0..5 {
        assert_eq!(cloud.list_routes("kubernetes").await.unwrap().len(), 400);
    }
    assert_eq!(route_table_writes(&sim), (0, 0), "listing routes read the table again");
}

#[tokio::test]
async fn missing_table_is_created_and_unmanaged_nodes_stay_in_memory() {
    let scenario = Scenario {
        route_table_name: None,
        ..Scenario::default_cluster()
    };
    let (sim, cloud, _d) = setup(&scenario).await;
    assert!(cloud.list_routes("kubernetes").await.unwrap().is_empty());
    cloud.set_node_unmanaged("onprem-1", true);
    sim.reset_calls();
    cloud
        .create_route("kubernetes", "", &route("onprem-1", "10.244.50.0/24"))
        .await
        .unwrap();
    assert_eq!(
        sim.calls().iter().filter(|c| c.is_arm()).count(),
        0,
        "unmanaged: no ARM call"
    );
    cloud
        .create_route("kubernetes", "", &route("k8s-pool2-1", "10.244.3.0/24"))
        .await
        .unwrap();
    let rt = sim.cluster().route_table.clone();
    assert_eq!(table_routes(&sim, &rt).len(), 1);
    let listed = cloud.list_routes("kubernetes").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|r| r.target_node == "onprem-1"));
    cloud
        .delete_route("kubernetes", &route("onprem-1", "10.244.50.0/24"))
        .await
        .unwrap();
    assert_eq!(cloud.list_routes("kubernetes").await.unwrap().len(), 1);
    // The created table is not associated with the subnet.
    let c = sim.cluster().clone();
    let vnet = sim
        .resource(&format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}",
            c.subscription, c.resource_group, c.vnet
        ))
        .unwrap();
    assert!(vnet["properties"]["subnets"][0]["properties"]
        .get("routeTable")
        .is_none());
}

#[tokio::test]
async fn the_route_limit_is_reported() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster()).await;
    let routes: Vec<Value> = (0..400).map(|i| json!({"name": format!("n{i}____x"), "properties": {"addressPrefix": format!("10.{}.{}.0/24", i / 256, i % 256), "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.240.0.4"}})).collect();
    seed_routes(&sim, json!(routes));
    let err = cloud
        .create_route("kubernetes", "", &route("k8s-pool2-1", "10.244.3.0/24"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 400 routes per route table"), "{err}");
}

/// N concurrent creates → 1 route-table PUT (the burst gathers within the coalescing window).
#[tokio::test]
async fn a_burst_of_creates_is_one_write() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster()).await;
    let nodes = [
        "k8s-pool1-vmss000000",
        "k8s-pool1-vmss000001",
        "k8s-pool1-vmss000002",
        "k8s-pool2-0",
        "k8s-pool2-1",
    ];
    for n in nodes {
        let vm = cloud.vm_set().node(n).await.unwrap();
        cloud.vm_set().node_ips(&vm).await.unwrap();
    }
    sim.reset_calls();
    let routes: Vec<Route> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| route(n, &format!("10.244.{i}.0/24")))
        .collect();
    let results = futures::future::join_all(routes.iter().map(|r| cloud.create_route("kubernetes", "", r))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(route_table_writes(&sim), (1, 1), "one GET and one PUT for the burst");
}

#[tokio::test]
async fn dual_stack_routes_use_the_address_of_the_cidr_family() {
    let scenario = Scenario {
        subnet_ipv6_cidr: Some("fd00:10:240::/64".into()),
        ..Scenario::default_cluster()
    };
    let (sim, cloud, _d) = setup(&scenario).await;
    cloud
        .create_route("kubernetes", "", &route("k8s-pool2-0", "10.244.0.0/24"))
        .await
        .unwrap();
    cloud
        .create_route("kubernetes", "", &route("k8s-pool2-0", "fd00:10:244::/64"))
        .await
        .unwrap();
    let routes = table_routes(&sim, &sim.cluster().route_table.clone());
    assert_eq!(
        routes,
        vec![
            (
                "k8s-pool2-0____102440024".to_string(),
                "10.244.0.0/24".to_string(),
                "10.240.0.7".to_string()
            ),
            (
                "k8s-pool2-0____fd001024464".to_string(),
                "fd00:10:244::/64".to_string(),
                "fd00:10:240::7".to_string()
            ),
        ]
    );
    let md = azure_cloud::provider::Instances::node_addresses(&cloud, "k8s-pool2-0")
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = md.iter().map(|a| (a.type_.clone(), a.address.clone())).collect();
    assert_eq!(kinds[1], ("InternalIP".to_string(), "fd00:10:240::7".to_string()));
    cloud
        .delete_route("kubernetes", &route("k8s-pool2-0", "fd00:10:244::/64"))
        .await
        .unwrap();
    assert_eq!(table_routes(&sim, &sim.cluster().route_table.clone()).len(), 1);
}
