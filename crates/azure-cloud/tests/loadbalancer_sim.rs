//! LoadBalancer against azure-sim: both vmTypes, external/internal, nodeIP and nodeIPConfiguration pools,
//! many services at once, idempotence, a concurrent writer, bad input, and a leak check after every delete.

mod common;
use common::cloud_for;

use azure_cloud::provider::{InstancesV2, LoadBalancer};
use azure_cloud::AzureCloud;
use azure_sim::scenario::{AvailabilitySetSpec, ScaleSetSpec, Scenario};
use azure_sim::AzureSim;
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::{json, Value};
use std::sync::Arc;

const CLUSTER: &str = "kubernetes";

async fn setup(scenario: &Scenario, overrides: Value) -> (AzureSim, Arc<AzureCloud>, tempfile::TempDir) {
    let (sim, cloud, dir) = cloud_for(scenario, overrides).await;
    (sim, Arc::new(cloud), dir)
}

/// Nodes as the node controller leaves them (addresses from the provider).
async fn nodes(cloud: &AzureCloud, names: &[&str]) -> Vec<Node> {
    let mut out = Vec::new();
    for n in names {
        let mut node: Node = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        let md = cloud.instance_metadata(&node).await.unwrap();
        node.spec = Some(serde_json::from_value(json!({"providerID": md.provider_id})).unwrap());
        node.status = Some(serde_json::from_value(json!({"addresses": md.node_addresses})).unwrap());
        out.push(node);
    }
    out
}

const DEFAULT_NODES: [&str; 5] = [
    "k8s-pool1-vmss000000",
    "k8s-pool1-vmss000001",
    "k8s-pool1-vmss000002",
    "k8s-pool2-0",
    "k8s-pool2-1",
];

fn service(name: &str, uid: &str, ports: &[i32], annotations: Value) -> Service {
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("p{p}"), "port": p, "nodePort": 30000 + p, "protocol": "TCP"}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": uid, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": ports},
    }))
    .unwrap()
}

fn uid(i: usize) -> String {
    format!("{i:08}-0000-0000-0000-000000000000")
}

fn rg_id(sim: &AzureSim) -> String {
    let c = sim.cluster();
    format!("/subscriptions/{}/resourceGroups/{}", c.subscription, c.resource_group)
}

fn lb(sim: &AzureSim, name: &str) -> Option<Value> {
    sim.resource(&format!(
        "{}/providers/Microsoft.Network/loadBalancers/{name}",
        rg_id(sim)
    ))
}

fn nsg_rules(sim: &AzureSim) -> Vec<Value> {
    let c = sim.cluster();
    let nsg = sim
        .resource(&format!(
            "{}/providers/Microsoft.Network/networkSecurityGroups/{}",
            rg_id(sim),
            c.nsg
        ))
        .unwrap();
    nsg["properties"]["securityRules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn count(v: &Value, prop: &str) -> usize {
    v["properties"][prop].as_array().map(Vec::len).unwrap_or(0)
}

fn public_ips(sim: &AzureSim) -> Vec<Value> {
    sim.with_store(|s, _| {
        s.all()
            .filter(|r| r.id.to_ascii_lowercase().contains("/publicipaddresses/"))
            .map(|r| r.body.clone())
            .collect()
    })
}

/// Writes (PUT/PATCH/DELETE) per resource type since the last reset.
fn writes(sim: &AzureSim) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for c in sim.calls() {
        if c.is_arm() && matches!(c.method.as_str(), "PUT" | "PATCH" | "DELETE") {
            *m.entry(format!("{} {}", c.method, c.resource_type)).or_insert(0) += 1;
        }
    }
    m
}

fn total_writes(sim: &AzureSim) -> usize {
    writes(sim).values().sum()
}

/// Nothing of ours is left: no LB, no managed PIP, no managed security rule, no NIC or scale set pointing
/// at a backend pool.
fn assert_no_leftovers(sim: &AzureSim) {
    assert!(lb(sim, CLUSTER).is_none(), "external LB deleted");
    assert!(lb(sim, &format!("{CLUSTER}-internal")).is_none(), "internal LB deleted");
    assert!(public_ips(sim).is_empty(), "PIPs left: {:?}", public_ips(sim));
    let rules: Vec<String> = nsg_rules(sim)
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .filter(|n| n.starts_with("k8s-azure-lb"))
        .collect();
    assert!(rules.is_empty(), "security rules left: {rules:?}");
    let refs: Vec<String> = sim.with_store(|s, _| {
        s.all()
            .filter(|r| {
                r.body
                    .to_string()
                    .to_ascii_lowercase()
                    .contains("/backendaddresspools/")
            })
            .map(|r| r.id.clone())
            .collect()
    });
    assert!(refs.is_empty(), "still referencing a backend pool: {refs:?}");
}

fn ingress(status: &k8s_openapi::api::core::v1::LoadBalancerStatus) -> Vec<String> {
    status
        .ingress
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip)
        .collect()
}

#[tokio::test]
async fn external_service_lifecycle_on_a_mixed_scale_set_cluster() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let svc = service("web", &uid(1), &[80, 443], json!({}));
    sim.reset_calls();
    let status = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    let ips = ingress(&status);
    assert_eq!(ips.len(), 1);
    let lbv = lb(&sim, CLUSTER).expect("LB created");
    assert_eq!(lbv["sku"]["name"], "Standard");
    assert_eq!(count(&lbv, "frontendIPConfigurations"), 1);
    assert_eq!(count(&lbv, "loadBalancingRules"), 2);
    assert_eq!(count(&lbv, "probes"), 2);
    let base = "a00000001000000000000000000000000"[..32].to_string();
    assert_eq!(
        lbv["properties"]["loadBalancingRules"][0]["name"],
        format!("{base}-TCP-80")
    );
    let pips = public_ips(&sim);
    assert_eq!(pips.len(), 1);
    assert_eq!(pips[0]["name"], format!("{CLUSTER}-{base}"));
    assert_eq!(pips[0]["properties"]["ipAddress"], ips[0].as_str());
    assert_eq!(pips[0]["tags"]["k8s-azure-service"], "default/web");
    // One aggregated allow rule from Internet to the service's IP, ports 443 and 80.
    let rules = nsg_rules(&sim);
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(rules[0]["name"]
        .as_str()
        .unwrap()
        .starts_with("k8s-azure-lb_allow_IPv4_"));
    assert_eq!(rules[0]["properties"]["destinationAddressPrefix"], ips[0].as_str());
    assert_eq!(rules[0]["properties"]["sourceAddressPrefix"], "Internet");
    // Every node's NIC is in the pool: scale-set instances (model + instances) and availability-set VMs.
    let pool = format!(
        "{}/providers/Microsoft.Network/loadBalancers/{CLUSTER}/backendAddressPools/{CLUSTER}",
        rg_id(&sim)
    )
    .to_ascii_lowercase();
    let members = sim.with_store(|s, _| {
        s.all()
            .filter(|r| r.id.to_ascii_lowercase().contains("/networkinterfaces/"))
            .filter(|r| r.body.to_string().to_ascii_lowercase().contains(&pool))
            .count()
    });
    assert_eq!(members, 5, "all five NICs joined the pool");
    let w = writes(&sim);
    assert_eq!(w.get("PUT Microsoft.Network/publicIPAddresses"), Some(&1));
    assert_eq!(w.get("PUT Microsoft.Network/loadBalancers"), Some(&1));
    assert_eq!(w.get("PUT Microsoft.Network/networkSecurityGroups"), Some(&1));
    assert_eq!(w.get("PATCH Microsoft.Compute/virtualMachineScaleSets"), Some(&1));
    assert_eq!(
        w.get("PUT Microsoft.Compute/virtualMachineScaleSets/virtualMachines"),
        Some(&3)
    );
    assert_eq!(w.get("PUT Microsoft.Network/networkInterfaces"), Some(&2));

    // Nothing changed: zero writes.
    sim.reset_calls();
    let again = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    assert_eq!(ingress(&again), ips);
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));
    assert_eq!(
        cloud
            .get_load_balancer(CLUSTER, &svc)
            .await
            .unwrap()
            .map(|s| ingress(&s)),
        Some(ips.clone())
    );

    // Port change: rules follow, the IP stays.
    let svc2 = service("web", &uid(1), &[8080], json!({}));
    let status = cloud.ensure_load_balancer(CLUSTER, &svc2, &nodes).await.unwrap();
    assert_eq!(ingress(&status), ips);
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(count(&lbv, "loadBalancingRules"), 1);
    assert_eq!(nsg_rules(&sim).len(), 1);
    assert_eq!(nsg_rules(&sim)[0]["properties"]["destinationPortRange"], "8080");

    cloud.ensure_load_balancer_deleted(CLUSTER, &svc2).await.unwrap();
    assert_no_leftovers(&sim);
    assert_eq!(cloud.get_load_balancer(CLUSTER, &svc2).await.unwrap(), None);
}

#[tokio::test]
async fn many_services_at_once_share_few_writes_node_ip_pools() {
    let scenario = Scenario {
        scale_sets: vec![ScaleSetSpec {
            name: "pool".into(),
            computer_name_prefix: Some("pool".into()),
            instances: 20,
            ..Default::default()
        }],
        ..Scenario::default()
    };
    let (sim, cloud, _d) = setup(&scenario, json!({"loadBalancerBackendPoolConfigurationType": "nodeIP"})).await;
    let names: Vec<String> = (0..20)
        .map(|i| format!("pool{}", azure_sim::scenario::base36_suffix(i)))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = Arc::new(nodes(&cloud, &refs).await);
    sim.reset_calls();
    let n = 40;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (cloud, nodes) = (cloud.clone(), nodes.clone());
        tasks.push(tokio::spawn(async move {
            let svc = service(&format!("s{i}"), &uid(100 + i), &[80], json!({}));
            cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await
        }));
    }
    let mut all_ips = std::collections::BTreeSet::new();
    for t in tasks {
        all_ips.extend(ingress(&t.await.unwrap().unwrap()));
    }
    assert_eq!(all_ips.len(), n, "every service has its own IP");
    let w = writes(&sim);
    let pip_puts = w.get("PUT Microsoft.Network/publicIPAddresses").copied().unwrap_or(0);
    let lb_puts = w.get("PUT Microsoft.Network/loadBalancers").copied().unwrap_or(0);
    let nsg_puts = w
        .get("PUT Microsoft.Network/networkSecurityGroups")
        .copied()
        .unwrap_or(0);
    assert_eq!(pip_puts, n);
    assert!(lb_puts <= 3, "LB PUTs: {lb_puts}");
    assert!(nsg_puts <= 3, "NSG PUTs: {nsg_puts}");
    assert_eq!(total_writes(&sim), pip_puts + lb_puts + nsg_puts, "{w:?}");
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(count(&lbv, "frontendIPConfigurations"), n);
    let pool = &lbv["properties"]["backendAddressPools"][0];
    assert_eq!(
        pool["properties"]["loadBalancerBackendAddresses"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
    // All the services have the same access: one security rule with every IP.
    let rules = nsg_rules(&sim);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["properties"]["destinationAddressPrefixes"]
            .as_array()
            .unwrap()
            .len(),
        n
    );

    // A node leaves (exclusion label): one LB PUT for all services.
    let mut fewer: Vec<Node> = nodes.iter().cloned().collect();
    fewer[0].metadata.labels.get_or_insert_with(Default::default).insert(
        "node.kubernetes.io/exclude-from-external-load-balancers".into(),
        "true".into(),
    );
    sim.reset_calls();
    let fewer = Arc::new(fewer);
    let mut tasks = Vec::new();
    for i in 0..n {
        let (cloud, nodes) = (cloud.clone(), fewer.clone());
        tasks.push(tokio::spawn(async move {
            let svc = service(&format!("s{i}"), &uid(100 + i), &[80], json!({}));
            cloud.update_load_balancer(CLUSTER, &svc, &nodes).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Only membership changed: the pool is written as its own child resource (not the LB with its 40
    // frontends, rules and probes), once for all services.
    let w = writes(&sim);
    assert_eq!(total_writes(&sim), 1, "{w:?}");
    assert_eq!(
        w.get("PUT Microsoft.Network/loadBalancers/backendAddressPools"),
        Some(&1),
        "{w:?}"
    );
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(
        lbv["properties"]["backendAddressPools"][0]["properties"]["loadBalancerBackendAddresses"]
            .as_array()
            .unwrap()
            .len(),
        19
    );
    assert_eq!(
        count(&lbv, "frontendIPConfigurations"),
        n,
        "the rest of the LB untouched"
    );
    // Our copy follows the pool write (its etag included): the next Service change is one LB PUT, no 412.
    sim.reset_calls();
    let extra = service("extra", &uid(99), &[80], json!({}));
    cloud.ensure_load_balancer(CLUSTER, &extra, &fewer).await.unwrap();
    let w = writes(&sim);
    assert_eq!(w.get("PUT Microsoft.Network/loadBalancers"), Some(&1), "{w:?}");
    assert_eq!(sim.arm_calls("GET"), 0, "no re-read after the pool write: {w:?}");
    cloud.ensure_load_balancer_deleted(CLUSTER, &extra).await.unwrap();

    // Delete them all at once.
    sim.reset_calls();
    let mut tasks = Vec::new();
    for i in 0..n {
        let cloud = cloud.clone();
        tasks.push(tokio::spawn(async move {
            let svc = service(&format!("s{i}"), &uid(100 + i), &[80], json!({}));
            cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let w = writes(&sim);
    assert_eq!(w.get("DELETE Microsoft.Network/publicIPAddresses"), Some(&n));
    assert!(total_writes(&sim) <= n + 5, "{w:?}");
    assert_no_leftovers(&sim);
}

#[tokio::test]
async fn internal_service_and_switching_to_external() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let internal = service(
        "api",
        &uid(7),
        &[443],
        json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}),
    );
    let status = cloud.ensure_load_balancer(CLUSTER, &internal, &nodes).await.unwrap();
    let ip = ingress(&status)[0].clone();
    assert!(ip.starts_with("10.240."), "{ip}");
    let ilb = lb(&sim, &format!("{CLUSTER}-internal")).unwrap();
    assert_eq!(
        ilb["properties"]["frontendIPConfigurations"][0]["properties"]["privateIPAddress"],
        ip.as_str()
    );
    assert!(public_ips(&sim).is_empty());
    assert!(
        nsg_rules(&sim).is_empty(),
        "internal without source ranges: no allow rule"
    );
    // An external service beside it: availability-set NICs join both pools of the cluster's LB pair.
    let web = service("web", &uid(8), &[80], json!({}));
    cloud.ensure_load_balancer(CLUSTER, &web, &nodes).await.unwrap();
    let nic = sim
        .with_store(|s, _| {
            s.all()
                .find(|r| r.id.ends_with("/networkInterfaces/k8s-pool2-0-nic"))
                .map(|r| r.body.clone())
        })
        .unwrap();
    let pools = nic["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"].to_string();
    assert!(
        pools.contains("/loadBalancers/kubernetes/") && pools.contains("/loadBalancers/kubernetes-internal/"),
        "{pools}"
    );
    cloud.ensure_load_balancer_deleted(CLUSTER, &web).await.unwrap();
    assert!(lb(&sim, CLUSTER).is_none());
    // Static address.
    let fixed = service(
        "api",
        &uid(7),
        &[443],
        json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true", "service.beta.kubernetes.io/azure-load-balancer-ipv4": "10.240.0.200"}),
    );
    let status = cloud.ensure_load_balancer(CLUSTER, &fixed, &nodes).await.unwrap();
    assert_eq!(ingress(&status), ["10.240.0.200"]);
    // To external: the internal LB loses its last frontend and is deleted (pools detached first).
    let mut external = service("api", &uid(7), &[443], json!({}));
    external.status =
        Some(serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "10.240.0.200"}]}})).unwrap());
    let status = cloud.ensure_load_balancer(CLUSTER, &external, &nodes).await.unwrap();
    assert!(!ingress(&status)[0].starts_with("10."));
    assert!(lb(&sim, &format!("{CLUSTER}-internal")).is_none());
    assert!(lb(&sim, CLUSTER).is_some());
    cloud.ensure_load_balancer_deleted(CLUSTER, &external).await.unwrap();
    assert_no_leftovers(&sim);
}

#[tokio::test]
async fn availability_set_cluster_source_ranges_and_a_concurrent_writer() {
    let scenario = Scenario {
        vm_type: "standard".into(),
        availability_sets: vec![AvailabilitySetSpec {
            name: "as1".into(),
            vm_name_prefix: "vm-".into(),
            vms: 3,
            ..Default::default()
        }],
        ..Scenario::default()
    };
    let (sim, cloud, _d) = setup(&scenario, json!({})).await;
    let nodes = nodes(&cloud, &["vm-0", "vm-1", "vm-2"]).await;
    let svc = service(
        "db",
        &uid(9),
        &[5432],
        json!({
            "service.beta.kubernetes.io/azure-allowed-ip-ranges": "10.1.0.0/16,192.168.0.0/24",
            "service.beta.kubernetes.io/azure-deny-all-except-load-balancer-source-ranges": "true",
        }),
    );
    let status = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    let ip = ingress(&status)[0].clone();
    let rules = nsg_rules(&sim);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(
        rules[0]["properties"]["sourceAddressPrefixes"],
        json!(["10.1.0.0/16", "192.168.0.0/24"])
    );
    assert_eq!(rules[1]["name"], "k8s-azure-lb_deny-all_IPv4");
    assert_eq!(rules[1]["properties"]["destinationAddressPrefix"], ip.as_str());
    let nic_members = sim.with_store(|s, _| {
        s.all()
            .filter(|r| r.id.to_ascii_lowercase().contains("/networkinterfaces/"))
            .filter(|r| r.body.to_string().contains("backendAddressPools"))
            .count()
    });
    assert_eq!(nic_members, 3);

    // Someone else edits the LB (its ETag changes): our next write gets 412, re-reads and succeeds.
    let lb_id = format!("{}/providers/Microsoft.Network/loadBalancers/{CLUSTER}", rg_id(&sim));
    sim.with_store(|s, _| {
        let mut body = s.get(&lb_id).unwrap().body.clone();
        body["tags"] = json!({"owner": "someone-else"});
        s.put(&lb_id, "Microsoft.Network/loadBalancers", body, 0);
    });
    sim.reset_calls();
    let svc2 = service("db", &uid(9), &[5433], json!({}));
    cloud.ensure_load_balancer(CLUSTER, &svc2, &nodes).await.unwrap();
    let lb_calls: Vec<u16> = sim
        .calls()
        .into_iter()
        .filter(|c| c.resource_type == "Microsoft.Network/loadBalancers" && c.method == "PUT")
        .map(|c| c.status)
        .collect();
    assert_eq!(lb_calls.first(), Some(&412), "{lb_calls:?}");
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(
        lbv["tags"]["owner"], "someone-else",
        "the other writer's change survives"
    );
    assert_eq!(
        lbv["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"],
        5433
    );
    cloud.ensure_load_balancer_deleted(CLUSTER, &svc2).await.unwrap();
    assert_no_leftovers(&sim);
}

#[tokio::test]
async fn bad_input_fails_alone_and_user_pips_are_never_deleted() {
    let (sim, cloud, _d) = setup(
        &Scenario::default_cluster(),
        json!({"loadBalancerBackendPoolConfigurationType": "nodeIP"}),
    )
    .await;
    let nodes = Arc::new(nodes(&cloud, &DEFAULT_NODES).await);
    // A PIP the user created, used by name.
    let pip_id = format!("{}/providers/Microsoft.Network/publicIPAddresses/my-ip", rg_id(&sim));
    sim.with_store(|s, _| {
        s.put(
            &pip_id,
            "Microsoft.Network/publicIPAddresses",
            json!({"name": "my-ip", "location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static", "ipAddress": "20.1.2.3"}}),
            0,
        );
    });
    let good = service(
        "good",
        &uid(20),
        &[80],
        json!({"service.beta.kubernetes.io/azure-pip-name": "my-ip"}),
    );
    let bad = service(
        "bad",
        &uid(21),
        &[80],
        json!({"service.beta.kubernetes.io/azure-load-balancer-tcp-idle-timeout": "500"}),
    );
    let missing = service(
        "missing",
        &uid(22),
        &[80],
        json!({"service.beta.kubernetes.io/azure-pip-name": "nope"}),
    );
    let (g, b, m) = tokio::join!(
        cloud.ensure_load_balancer(CLUSTER, &good, &nodes),
        cloud.ensure_load_balancer(CLUSTER, &bad, &nodes),
        cloud.ensure_load_balancer(CLUSTER, &missing, &nodes),
    );
    assert_eq!(ingress(&g.unwrap()), ["20.1.2.3"]);
    let e = b.unwrap_err().to_string();
    assert!(e.contains("azure-load-balancer-tcp-idle-timeout"), "{e}");
    let e = m.unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("was not found"), "{e}");
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(count(&lbv, "frontendIPConfigurations"), 1, "only the good service");
    cloud.ensure_load_balancer_deleted(CLUSTER, &good).await.unwrap();
    cloud.ensure_load_balancer_deleted(CLUSTER, &bad).await.unwrap();
    assert!(sim.resource(&pip_id).is_some(), "a user's PIP is never deleted");
    assert!(lb(&sim, CLUSTER).is_none());
    // A Service naming a resource group that does not exist: ensuring fails and says so (typed, permanent
    // is not claimed: the group may be created), deleting completes (nothing of it can exist there).
    let elsewhere = service(
        "elsewhere",
        &uid(23),
        &[80],
        json!({"service.beta.kubernetes.io/azure-load-balancer-resource-group": "no-such-group"}),
    );
    let e = cloud
        .ensure_load_balancer(CLUSTER, &elsewhere, &nodes)
        .await
        .unwrap_err();
    assert!(!e.is_permanent(), "{e}");
    cloud.ensure_load_balancer_deleted(CLUSTER, &elsewhere).await.unwrap();
    // Invalid annotations are permanent errors: not retried until the Service changes.
    assert!(cloud
        .ensure_load_balancer(CLUSTER, &bad, &nodes)
        .await
        .unwrap_err()
        .is_permanent());
}

#[tokio::test]
async fn basic_sku_spreads_services_over_the_availability_sets_load_balancers() {
    let scenario = Scenario {
        vm_type: "standard".into(),
        availability_sets: vec![
            AvailabilitySetSpec {
                name: "as1".into(),
                vm_name_prefix: "a-".into(),
                vms: 2,
                ..Default::default()
            },
            AvailabilitySetSpec {
                name: "as2".into(),
                vm_name_prefix: "b-".into(),
                vms: 2,
                ..Default::default()
            },
        ],
        ..Scenario::default()
    };
    let (sim, cloud, _d) = setup(
        &scenario,
        json!({"loadBalancerSku": "basic", "primaryAvailabilitySetName": "as1"}),
    )
    .await;
    let nodes = nodes(&cloud, &["a-0", "a-1", "b-0", "b-1"]).await;
    let auto = json!({"service.beta.kubernetes.io/azure-load-balancer-mode": "__auto__"});
    let one = service("one", &uid(31), &[80], auto.clone());
    let two = service("two", &uid(32), &[80], auto.clone());
    cloud.ensure_load_balancer(CLUSTER, &one, &nodes).await.unwrap();
    cloud.ensure_load_balancer(CLUSTER, &two, &nodes).await.unwrap();
    // The primary set's LB is named after the cluster; the other after its availability set.
    let primary = lb(&sim, CLUSTER).expect("primary LB");
    let other = lb(&sim, "as2").expect("as2 LB");
    assert_eq!(primary["sku"]["name"], "Basic");
    assert_eq!(count(&primary, "loadBalancingRules"), 1);
    assert_eq!(
        count(&other, "loadBalancingRules"),
        1,
        "the second service went to the emptier LB"
    );
    assert!(public_ips(&sim).iter().all(|p| p["sku"]["name"] == "Basic"));
    // Basic: only the LB's own availability set joins its pool.
    let pools_of = |nic: &str| {
        sim.with_store(|s, _| {
            s.all()
                .find(|r| r.id.ends_with(&format!("/networkInterfaces/{nic}-nic")))
                .map(|r| r.body.clone())
        })
        .unwrap()["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"]
            .to_string()
    };
    assert!(
        pools_of("a-0").contains("/loadBalancers/kubernetes/"),
        "{}",
        pools_of("a-0")
    );
    assert!(!pools_of("a-0").contains("/loadBalancers/as2/"));
    assert!(pools_of("b-1").contains("/loadBalancers/as2/"), "{}", pools_of("b-1"));
    assert!(!pools_of("b-1").contains("/loadBalancers/kubernetes/"));
    // A second ensure keeps each service where it is: no writes.
    sim.reset_calls();
    cloud.ensure_load_balancer(CLUSTER, &two, &nodes).await.unwrap();
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));
    cloud.ensure_load_balancer_deleted(CLUSTER, &one).await.unwrap();
    cloud.ensure_load_balancer_deleted(CLUSTER, &two).await.unwrap();
    assert!(lb(&sim, "as2").is_none());
    assert_no_leftovers(&sim);
}

#[tokio::test]
async fn each_shared_resource_keeps_its_copy_for_its_own_ttl() {
    // The security group is re-read after nsgCacheTTLInSeconds; the load balancer copy (600 s) is reused.
    let (sim, cloud, _d) = setup(
        &Scenario::default_cluster(),
        json!({"nsgCacheTTLInSeconds": 1, "loadBalancerCacheTTLInSeconds": 600}),
    )
    .await;
    let nodes = Arc::new(nodes(&cloud, &DEFAULT_NODES).await);
    let gets = |sim: &AzureSim, ty: &str| {
        sim.calls()
            .iter()
            .filter(|c| c.method == "GET" && c.operation == "get" && c.resource_type.ends_with(ty))
            .count()
    };
    cloud
        .ensure_load_balancer(CLUSTER, &service("one", &uid(40), &[80], json!({})), &nodes)
        .await
        .unwrap();
    let (nsg0, lb0) = (gets(&sim, "networkSecurityGroups"), gets(&sim, "loadBalancers"));
    cloud
        .ensure_load_balancer(CLUSTER, &service("two", &uid(41), &[81], json!({})), &nodes)
        .await
        .unwrap();
    assert_eq!(
        gets(&sim, "networkSecurityGroups"),
        nsg0,
        "NSG copy reused within its TTL"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    cloud
        .ensure_load_balancer(CLUSTER, &service("three", &uid(42), &[82], json!({})), &nodes)
        .await
        .unwrap();
    assert_eq!(
        gets(&sim, "networkSecurityGroups"),
        nsg0 + 1,
        "NSG re-read after nsgCacheTTLInSeconds"
    );
    assert_eq!(
        gets(&sim, "loadBalancers"),
        lb0,
        "LB copy reused (loadBalancerCacheTTLInSeconds 600)"
    );
    let rules = nsg_rules(&sim);
    assert!(!rules.is_empty());
}

#[tokio::test]
async fn new_public_ips_and_internal_frontends_get_the_regions_zones() {
    // As upstream: zone-redundant standard public IPs and internal frontends in a zonal region (zones from
    // the Compute provider's zoneMappings, read once).
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = Arc::new(nodes(&cloud, &DEFAULT_NODES).await);
    cloud
        .ensure_load_balancer(CLUSTER, &service("ext", &uid(50), &[80], json!({})), &nodes)
        .await
        .unwrap();
    let internal = service(
        "int",
        &uid(51),
        &[80],
        json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}),
    );
    cloud.ensure_load_balancer(CLUSTER, &internal, &nodes).await.unwrap();
    let zones = json!(["1", "2", "3"]);
    let pips = public_ips(&sim);
    assert_eq!(pips.len(), 1);
    assert_eq!(pips[0]["zones"], zones);
    let ilb = lb(&sim, &format!("{CLUSTER}-internal")).unwrap();
    assert_eq!(ilb["properties"]["frontendIPConfigurations"][0]["zones"], zones);
    let provider_reads = sim
        .calls()
        .iter()
        .filter(|c| c.resource_type.ends_with("providers"))
        .count();
    assert_eq!(provider_reads, 1, "the region's zones are read once");
    // A second pass writes nothing.
    let before = total_writes(&sim);
    cloud.ensure_load_balancer(CLUSTER, &internal, &nodes).await.unwrap();
    assert_eq!(total_writes(&sim), before);
}

#[tokio::test]
async fn scale_sets_are_updated_concurrently() {
    // Two scale sets of 3 instances, 100 ms per ARM call: their instance writes overlap in time (upstream
    // updates scale sets concurrently; one after the other took 19.7 s vs 15.4 s simulated).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = azure_sim::SimOptions {
        latency: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let sim = AzureSim::start("127.0.0.1:0".parse().unwrap(), opts, &Scenario::scale_sets(2, 3))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    sim.write_config(&path).unwrap();
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["useInstanceMetadata"] = json!(false);
    let (cfg, _) = azure_cloud::config::CloudConfig::parse(&v.to_string(), &|_| None).unwrap();
    let cloud = Arc::new(AzureCloud::new(cfg, &|_| None).await.unwrap());
    let names: Vec<String> = (0..2)
        .flat_map(|s| (0..3).map(move |i| format!("pool{s}{}", azure_sim::scenario::base36_suffix(i))))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let nodes = nodes(&cloud, &refs).await;
    sim.reset_calls();
    cloud
        .ensure_load_balancer(CLUSTER, &service("web", &uid(60), &[80], json!({})), &nodes)
        .await
        .unwrap();
    let puts = |set: &str| -> Vec<u64> {
        sim.calls()
            .iter()
            .filter(|c| c.method == "PUT" && c.resource_type.ends_with("virtualMachineScaleSets/virtualMachines"))
            .filter(|c| c.path.contains(&format!("/virtualMachineScaleSets/{set}/")))
            .map(|c| c.arrived_ms)
            .collect()
    };
    let (a, b) = (puts("pool0"), puts("pool1"));
    assert_eq!((a.len(), b.len()), (3, 3), "every instance joined the pool");
    let (a_first, a_last) = (*a.iter().min().unwrap(), *a.iter().max().unwrap());
    let (b_first, b_last) = (*b.iter().min().unwrap(), *b.iter().max().unwrap());
    assert!(
        b_first < a_last + 100 && a_first < b_last + 100,
        "scale sets written one after the other: pool0 {a:?}, pool1 {b:?}"
    );
}

/// Records the provider's Warning events.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<(String, String)>>);

impl azure_cloud::loadbalancer::service::EventSink for Events {
    fn warning(&self, _service: &Service, reason: &str, message: &str) {
        self.0.lock().unwrap().push((reason.to_string(), message.to_string()));
    }
}

/// A failed Azure operation is reported as upstream does: a Warning event whose reason names the operation
/// (`CreateOrUpdatePublicIPAddress`, ...), besides the error the controller reports.
#[tokio::test]
async fn failed_azure_operations_are_events_with_upstreams_reasons() {
    use azure_sim::faults::{FaultKind, FaultRule};
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let events = Arc::new(Events::default());
    cloud.load_balancers().set_event_sink(events.clone());
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    sim.set_faults(vec![FaultRule {
        method: Some("PUT".into()),
        resource_type: Some("publicIPAddresses".into()),
        fault: FaultKind::Status { status: 400 },
        rate: 1.0,
        count: None,
    }]);
    let svc = service("web", &uid(70), &[80], json!({}));
    let err = cloud
        .ensure_load_balancer("kubernetes", &svc, &nodes)
        .await
        .unwrap_err();
    let got = events.0.lock().unwrap().clone();
    assert!(
        got.iter().any(|(r, _)| r == "CreateOrUpdatePublicIPAddress"),
        "{err}: {got:?}"
    );
    // Upstream's operation series counted the failure.
    let mut reg = prometheus_client::registry::Registry::default();
    cloud.arm().unwrap().metrics().register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    assert!(
        text.contains("cloudprovider_azure_op_failure_count{request=\"services_ensure_loadbalancer\""),
        "{text}"
    );
    assert!(text.contains("source=\"default/web\""), "{text}");
}

fn tags_at(sim: &AzureSim, id: &str) -> Value {
    sim.resource(id).map(|r| r["tags"].clone()).unwrap_or(Value::Null)
}

/// `tags`/`tagsMap` are reconciled on the load balancer, the security group, the route table and public IPs
/// as upstream does; with `systemTags` set, foreign tags go, system ones and our own stay.
#[tokio::test]
async fn tags_are_reconciled_on_every_resource_we_manage() {
    use azure_cloud::provider::Routes;
    let (sim, _, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let rg = rg_id(&sim);
    let c = sim.cluster().clone();
    let nsg_id = format!("{rg}/providers/Microsoft.Network/networkSecurityGroups/{}", c.nsg);
    let rt_id = format!("{rg}/providers/Microsoft.Network/routeTables/{}", c.route_table);
    // Tags someone else put there.
    sim.with_store(|s, _| {
        for id in [&nsg_id, &rt_id] {
            let mut r = s.get(id).unwrap().body.clone();
            r["tags"] = json!({"old": "x", "Keep-Me": "y"});
            let ty = r["type"].as_str().unwrap().to_string();
            s.put(id, &ty, r, 0);
        }
    });
    // A cloud configured with tags and systemTags (the same simulator).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("azure.json");
    sim.write_config(&path).unwrap();
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["useInstanceMetadata"] = json!(false);
    v["tags"] = json!("team=a");
    v["systemTags"] = json!("keep-me");
    let (cfg, _) = azure_cloud::config::CloudConfig::parse(&v.to_string(), &|_| None).unwrap();
    let cloud = AzureCloud::new(cfg, &|_| None).await.unwrap();
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let svc = service("web", &uid(80), &[80], json!({}));
    cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    cloud.list_routes(CLUSTER).await.unwrap();
    assert_eq!(tags_at(&sim, &nsg_id), json!({"Keep-Me": "y", "team": "a"}));
    assert_eq!(tags_at(&sim, &rt_id), json!({"Keep-Me": "y", "team": "a"}));
    let lb_tags = lb(&sim, CLUSTER).unwrap()["tags"].clone();
    assert_eq!(lb_tags, json!({"team": "a"}));
    let pips = public_ips(&sim);
    let pip_tags = &pips[0]["tags"];
    assert_eq!(pip_tags["team"], "a");
    assert_eq!(
        pip_tags["k8s-azure-service"], "default/web",
        "our own tags stay: {pip_tags}"
    );
    // Nothing left to reconcile: a second pass writes nothing.
    sim.reset_calls();
    cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    cloud.list_routes(CLUSTER).await.unwrap();
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));
    cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await.unwrap();
}

/// `azure-pip-ip-tags`: set on a new public IP; changing them on an existing one is refused with the public
/// IP named, except FirstPartyUsage tags with `enableIPTagMutationForExistingPublicIP`.
#[tokio::test]
async fn ip_tags_of_public_ips() {
    let ann = |v: &str| json!({"service.beta.kubernetes.io/azure-pip-ip-tags": v});
    for mutation in [false, true] {
        let (sim, cloud, _d) = setup(
            &Scenario::default_cluster(),
            json!({"enableIPTagMutationForExistingPublicIP": mutation}),
        )
        .await;
        let nodes = nodes(&cloud, &DEFAULT_NODES).await;
        let svc = service("web", &uid(90), &[80], ann("FirstPartyUsage=/Unprivileged"));
        cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
        assert_eq!(
            public_ips(&sim)[0]["properties"]["ipTags"],
            json!([{"ipTagType": "FirstPartyUsage", "tag": "/Unprivileged"}])
        );
        // Another type on the existing public IP: always refused, naming it; nothing written.
        sim.reset_calls();
        let other = service("web", &uid(90), &[80], ann("RoutingPreference=Internet"));
        let e = cloud
            .ensure_load_balancer(CLUSTER, &other, &nodes)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("IP tags of an existing public IP cannot change") && e.contains("kubernetes-a"),
            "{e}"
        );
        assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));
        // A FirstPartyUsage change: in place with the switch, refused without it.
        let first_party = service("web", &uid(90), &[80], ann("FirstPartyUsage=/Sql"));
        let r = cloud.ensure_load_balancer(CLUSTER, &first_party, &nodes).await;
        assert_eq!(r.is_ok(), mutation, "{r:?}");
        let want = if mutation { "/Sql" } else { "/Unprivileged" };
        assert_eq!(public_ips(&sim)[0]["properties"]["ipTags"][0]["tag"], want);
        cloud.ensure_load_balancer_deleted(CLUSTER, &first_party).await.unwrap();
    }
}

/// A Service's public IP in another resource group (`azure-load-balancer-resource-group`) and from a public
/// IP prefix (`azure-pip-prefix-id`): created there, named as upstream, and deleted with the Service.
#[tokio::test]
async fn public_ip_in_another_group_and_from_a_prefix() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let sub = sim.cluster().subscription.clone();
    let prefix =
        format!("/subscriptions/{sub}/resourceGroups/net-rg/providers/Microsoft.Network/publicIPPrefixes/my-prefix");
    // The operator's resource group for the Service's public IPs exists (ARM refuses writes into one that
    // does not: ResourceGroupNotFound).
    sim.with_store(|s, _| {
        s.put(
            &format!("/subscriptions/{sub}/resourceGroups/pip-rg"),
            "Microsoft.Resources/resourceGroups",
            json!({"location": "eastus"}),
            0,
        );
    });
    let svc = service(
        "web",
        &uid(95),
        &[80],
        json!({
            "service.beta.kubernetes.io/azure-load-balancer-resource-group": "pip-rg",
            "service.beta.kubernetes.io/azure-pip-prefix-id": prefix,
        }),
    );
    let status = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    assert_eq!(ingress(&status).len(), 1);
    let lbv = lb(&sim, CLUSTER).unwrap();
    let base = lbv["properties"]["frontendIPConfigurations"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let pip_id = format!("/subscriptions/{sub}/resourceGroups/pip-rg/providers/Microsoft.Network/publicIPAddresses/{CLUSTER}-{base}-my-prefix");
    let pip = sim.resource(&pip_id).unwrap_or_else(|| panic!("{pip_id} missing"));
    assert_eq!(pip["properties"]["publicIPPrefix"]["id"], prefix);
    // The frontend uses it; deleting the Service deletes it (it is ours) and leaves nothing.
    assert!(
        lbv["properties"]["frontendIPConfigurations"][0]["properties"]["publicIPAddress"]["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(&pip_id)),
        "{lbv}"
    );
    cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await.unwrap();
    assert!(
        sim.resource(&pip_id).is_none(),
        "the public IP in pip-rg was left behind"
    );
    assert_no_leftovers(&sim);
}

fn dual_stack_service(name: &str, uid: &str, annotations: Value) -> Service {
    let mut s = service(name, uid, &[80], annotations);
    let spec = s.spec.as_mut().unwrap();
    spec.ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
    spec.ip_family_policy = Some("RequireDualStack".into());
    s
}

/// Dual-stack end to end against azure-sim: an IPv4 and an IPv6 public IP (the IPv6 one with an IPv6
/// address), frontends `<base>` and `<base>-IPv6`, pools `<cluster>` and `<cluster>-IPv6` holding the nodes'
/// addresses of each family, a security rule per family; internal: an IPv6 frontend address from the subnet's
/// IPv6 prefix. Everything goes with the Service.
#[tokio::test]
async fn dual_stack_services_end_to_end() {
    let scenario = Scenario {
        subnet_ipv6_cidr: Some("fd00:10:240::/64".into()),
        ..Scenario::default_cluster()
    };
    for pool_type in ["nodeIP", "nodeIPConfiguration"] {
        dual_stack_with(&scenario, pool_type).await;
    }
}

async fn dual_stack_with(scenario: &Scenario, pool_type: &str) {
    let (sim, cloud, _d) = setup(scenario, json!({"loadBalancerBackendPoolConfigurationType": pool_type})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let svc = dual_stack_service("web", &uid(110), json!({}));
    let status = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    let ips = ingress(&status);
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips.iter().any(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()), "{ips:?}");
    assert!(ips.iter().any(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()), "{ips:?}");
    let lbv = sim
        .resource_as_served(&format!(
            "{}/providers/Microsoft.Network/loadBalancers/{CLUSTER}",
            rg_id(&sim)
        ))
        .unwrap();
    let names = |prop: &str| -> Vec<String> {
        lbv["properties"][prop]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let fes = names("frontendIPConfigurations");
    assert_eq!(fes.len(), 2, "{fes:?}");
    assert!(fes.iter().any(|n| n.ends_with("-IPv6")), "{fes:?}");
    let pools = names("backendAddressPools");
    assert!(
        pools.contains(&"kubernetes".to_string()) && pools.contains(&"kubernetes-IPv6".to_string()),
        "{pools:?}"
    );
    for pool in lbv["properties"]["backendAddressPools"].as_array().unwrap() {
        let v6 = pool["name"].as_str().unwrap().ends_with("-IPv6");
        if pool_type == "nodeIP" {
            let addrs = pool["properties"]["loadBalancerBackendAddresses"].as_array().unwrap();
            assert_eq!(addrs.len(), 5, "{pool}");
            for a in addrs {
                let ip = a["properties"]["ipAddress"].as_str().unwrap();
                assert_eq!(ip.contains(':'), v6, "{ip} in {}", pool["name"]);
            }
        } else {
            // NIC-based: each node's IP configuration of the pool's family joined it (ARM's back-references).
            let members = pool["properties"]["backendIPConfigurations"]
                .as_array()
                .unwrap_or_else(|| panic!("no members in {pool}"));
            assert_eq!(members.len(), 5, "{pool}");
            for m in members {
                let id = m["id"].as_str().unwrap();
                assert_eq!(id.ends_with("ipconfig-v6"), v6, "{id} in {}", pool["name"]);
            }
        }
    }
    let pips = public_ips(&sim);
    assert_eq!(pips.len(), 2);
    let v6_pip = pips
        .iter()
        .find(|p| p["properties"]["publicIPAddressVersion"] == "IPv6")
        .expect("an IPv6 public IP");
    assert!(v6_pip["name"].as_str().unwrap().ends_with("-IPv6"));
    assert!(v6_pip["properties"]["ipAddress"]
        .as_str()
        .unwrap()
        .parse::<std::net::Ipv6Addr>()
        .is_ok());
    let rules = nsg_rules(&sim);
    let rule_names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(
        rule_names.iter().any(|n| n.contains("_IPv4_")) && rule_names.iter().any(|n| n.contains("_IPv6_")),
        "{rule_names:?}"
    );

    // Internal dual-stack: the IPv6 frontend's private address comes from the subnet's IPv6 prefix.
    let internal = dual_stack_service(
        "db",
        &uid(111),
        json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}),
    );
    let status = cloud.ensure_load_balancer(CLUSTER, &internal, &nodes).await.unwrap();
    let ips = ingress(&status);
    assert!(ips.iter().any(|ip| ip.starts_with("fd00:10:240:")), "{ips:?}");
    assert!(ips.iter().any(|ip| ip.starts_with("10.240.")), "{ips:?}");

    for s in [&svc, &internal] {
        cloud.ensure_load_balancer_deleted(CLUSTER, s).await.unwrap();
    }
    assert_no_leftovers(&sim);
}

/// Services naming the same public IP share one frontend (as upstream): each keeps its own ports, the
/// security rules allow both, a port both want fails the later one only, and the frontend goes with the
/// last Service (the user's public IP stays).
#[tokio::test]
async fn services_naming_the_same_public_ip_share_one_frontend() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let pip_id = format!(
        "{}/providers/Microsoft.Network/publicIPAddresses/shared-ip",
        rg_id(&sim)
    );
    sim.with_store(|s, _| {
        s.put(
            &pip_id,
            "Microsoft.Network/publicIPAddresses",
            json!({"location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static", "ipAddress": "20.9.9.9"}}),
            0,
        );
    });
    let ann = json!({"service.beta.kubernetes.io/azure-pip-name": "shared-ip"});
    let web = service("web", &uid(120), &[80], ann.clone());
    let api = service("api", &uid(121), &[443], ann.clone());
    for s in [&web, &api] {
        let st = cloud.ensure_load_balancer(CLUSTER, s, &nodes).await.unwrap();
        assert_eq!(ingress(&st), vec!["20.9.9.9".to_string()]);
    }
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(count(&lbv, "frontendIPConfigurations"), 1, "one shared frontend");
    assert_eq!(count(&lbv, "loadBalancingRules"), 2);
    let ports: Vec<String> = nsg_rules(&sim)
        .iter()
        .filter(|r| r["properties"]["destinationAddressPrefix"] == "20.9.9.9")
        .map(|r| {
            r["properties"]["destinationPortRange"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        ports.contains(&"80".to_string()) && ports.contains(&"443".to_string()),
        "{ports:?}"
    );
    // A port the first Service has: the later one fails; nothing changes.
    let clash = service("clash", &uid(122), &[80], ann.clone());
    sim.reset_calls();
    let e = cloud.ensure_load_balancer(CLUSTER, &clash, &nodes).await.unwrap_err();
    assert!(e.to_string().contains("80"), "{e}");
    assert_eq!(
        writes(&sim).get("PUT Microsoft.Network/loadBalancers"),
        None,
        "{:?}",
        writes(&sim)
    );
    cloud.ensure_load_balancer_deleted(CLUSTER, &clash).await.unwrap();
    // The frontend's first user goes: the frontend stays for the other, whose traffic is still allowed; the
    // deleted Service is told so (upstream's DeletingFrontendIPConfiguration).
    let events = Arc::new(Events::default());
    cloud.load_balancers().set_event_sink(events.clone());
    cloud.ensure_load_balancer_deleted(CLUSTER, &web).await.unwrap();
    assert!(
        events
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(r, _)| r == "DeletingFrontendIPConfiguration"),
        "{:?}",
        events.0.lock().unwrap()
    );
    let lbv = lb(&sim, CLUSTER).unwrap();
    assert_eq!(count(&lbv, "frontendIPConfigurations"), 1);
    assert_eq!(count(&lbv, "loadBalancingRules"), 1);
    assert!(
        nsg_rules(&sim)
            .iter()
            .any(|r| r["properties"]["destinationAddressPrefix"] == "20.9.9.9"
                && r["properties"]["destinationPortRange"] == "443"),
        "{:?}",
        nsg_rules(&sim)
    );
    let st = cloud.ensure_load_balancer(CLUSTER, &api, &nodes).await.unwrap();
    assert_eq!(ingress(&st), vec!["20.9.9.9".to_string()]);
    // The last user goes: the frontend (and the LB) go, the user's public IP stays.
    cloud.ensure_load_balancer_deleted(CLUSTER, &api).await.unwrap();
    assert!(lb(&sim, CLUSTER).is_none());
    assert!(sim.resource(&pip_id).is_some(), "the user's public IP is never deleted");
}

fn private_link_services(sim: &AzureSim) -> Vec<Value> {
    sim.state()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["type"] == "Microsoft.Network/privateLinkServices")
        .cloned()
        .collect()
}

/// `azure-pls-*`: a Private Link Service on the internal frontend, named and tagged as upstream, its subnet's
/// network policies disabled first (azure-sim refuses otherwise, as ARM), updated only when a setting
/// changes, deleted before its frontend (azure-sim refuses the other order, as ARM).
#[tokio::test]
async fn private_link_service_lifecycle() {
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), json!({})).await;
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let ann = |fqdns: &str| {
        json!({
            "service.beta.kubernetes.io/azure-load-balancer-internal": "true",
            "service.beta.kubernetes.io/azure-pls-create": "true",
            "service.beta.kubernetes.io/azure-pls-ip-configuration-ip-address-count": "2",
            "service.beta.kubernetes.io/azure-pls-fqdns": fqdns,
            "service.beta.kubernetes.io/azure-pls-visibility": "*",
        })
    };
    let svc = service("db", &uid(130), &[5432], ann("db.example"));
    cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    let plss = private_link_services(&sim);
    assert_eq!(plss.len(), 1);
    let pls = &plss[0];
    let fe = lb(&sim, "kubernetes-internal").unwrap()["properties"]["frontendIPConfigurations"][0].clone();
    let fe_name = fe["name"].as_str().unwrap();
    assert_eq!(pls["name"], format!("pls-{fe_name}"));
    assert_eq!(
        pls["properties"]["loadBalancerFrontendIpConfigurations"][0]["id"],
        fe["id"]
    );
    assert_eq!(pls["tags"]["k8s-azure-owner-service"], "default/db");
    assert_eq!(pls["tags"]["k8s-azure-cluster-name"], CLUSTER);
    let ipcs = pls["properties"]["ipConfigurations"].as_array().unwrap();
    assert_eq!(ipcs.len(), 2);
    assert_eq!(ipcs[0]["name"], format!("nodes-pls-{fe_name}-dynamic-0"));
    assert!(ipcs.iter().all(|c| c["properties"]["privateIPAddress"]
        .as_str()
        .is_some_and(|ip| ip.starts_with("10.240."))));
    assert_eq!(pls["properties"]["visibility"]["subscriptions"], json!(["*"]));
    // Nothing changed: nothing written, and the subnet is not read again.
    sim.reset_calls();
    cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));
    assert!(
        !sim.calls()
            .iter()
            .any(|c| c.path.to_ascii_lowercase().contains("/subnets/")),
        "{:?}",
        sim.call_counts()
    );
    // A new FQDN: one PLS PUT.
    let changed = service("db", &uid(130), &[5432], ann("db2.example"));
    cloud.ensure_load_balancer(CLUSTER, &changed, &nodes).await.unwrap();
    assert_eq!(
        writes(&sim).get("PUT Microsoft.Network/privateLinkServices"),
        Some(&1),
        "{:?}",
        writes(&sim)
    );
    assert_eq!(
        private_link_services(&sim)[0]["properties"]["fqdns"],
        json!(["db2.example"])
    );
    // A public Service asking for one is refused (internal or floating IP disabled only).
    let public = service(
        "web",
        &uid(131),
        &[80],
        json!({"service.beta.kubernetes.io/azure-pls-create": "true"}),
    );
    let e = cloud.ensure_load_balancer(CLUSTER, &public, &nodes).await.unwrap_err();
    assert!(e.to_string().contains("must be internal or disable floating IP"), "{e}");
    cloud.ensure_load_balancer_deleted(CLUSTER, &public).await.unwrap();
    // Deleting the Service deletes the PLS, then the frontend.
    cloud.ensure_load_balancer_deleted(CLUSTER, &changed).await.unwrap();
    assert!(private_link_services(&sim).is_empty());
    assert_no_leftovers(&sim);
}

/// `networkResourceSubscriptionID`: the load balancer and public IPs live in the network subscription —
/// the URLs the provider writes to and the ids in the bodies agree — while the nodes' NICs and scale sets
/// stay in the cluster's subscription and join pools across the two.
#[tokio::test]
async fn network_resources_in_another_subscription() {
    network_resources_elsewhere(None).await;
}

/// `networkResourceTenantID`: the network subscription in another tenant. Requests there carry that tenant's
/// token; the scale set joining the pool across carries it as the auxiliary token (azure-sim refuses either
/// otherwise, as ARM does).
#[tokio::test]
async fn network_resources_in_another_tenant() {
    network_resources_elsewhere(Some("00000000-0000-0000-0000-0000000000b2")).await;
}

async fn network_resources_elsewhere(tenant: Option<&str>) {
    let net_sub = "22222222-0000-0000-0000-000000000002";
    let mut overrides = json!({"networkResourceSubscriptionID": net_sub});
    if let Some(t) = tenant {
        overrides["networkResourceTenantID"] = json!(t);
    }
    let (sim, cloud, _d) = setup(&Scenario::default_cluster(), overrides).await;
    if let Some(t) = tenant {
        sim.set_subscription_tenant(net_sub, t);
    }
    let rg = sim.cluster().resource_group.clone();
    let net_rg = format!("/subscriptions/{net_sub}/resourceGroups/{rg}");
    sim.with_store(|s, _| {
        s.put(
            &net_rg,
            "Microsoft.Resources/resourceGroups",
            json!({"location": "eastus"}),
            0,
        );
    });
    let nodes = nodes(&cloud, &DEFAULT_NODES).await;
    let svc = service("web", &uid(140), &[80], json!({}));
    let st = cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await.unwrap();
    assert_eq!(ingress(&st).len(), 1);
    let lb_id = format!("{net_rg}/providers/Microsoft.Network/loadBalancers/{CLUSTER}");
    let lbv = sim
        .resource(&lb_id)
        .expect("the load balancer in the network subscription");
    assert!(lb(&sim, CLUSTER).is_none(), "nothing in the cluster's subscription");
    let pip_id = lbv["properties"]["frontendIPConfigurations"][0]["properties"]["publicIPAddress"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pip_id.starts_with(&net_rg), "{pip_id}");
    assert!(sim.resource(&pip_id).is_some(), "the public IP where its id says");
    // The scale set (cluster subscription) joined the pool of the network subscription's LB.
    let ss = sim
        .cluster()
        .id("Microsoft.Compute", "virtualMachineScaleSets/k8s-pool1-vmss");
    let model = sim.resource(&ss).unwrap()["properties"]["virtualMachineProfile"]["networkProfile"].to_string();
    assert!(
        model
            .to_ascii_lowercase()
            .contains(&format!("/subscriptions/{net_sub}/")),
        "{model}"
    );
    cloud.ensure_load_balancer_deleted(CLUSTER, &svc).await.unwrap();
    assert!(sim.resource(&lb_id).is_none() && sim.resource(&pip_id).is_none());
}

fn labelled(mut s: Service, labels: Value) -> Service {
    s.metadata.labels = serde_json::from_value(labels).unwrap();
    s
}

/// `<lb>`'s `kubernetes` pool members (node names).
fn pool_members(sim: &AzureSim, lb_name: &str) -> Vec<String> {
    let Some(lbv) = lb(sim, lb_name) else { return Vec::new() };
    let mut out: Vec<String> = lbv["properties"]["backendAddressPools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == CLUSTER)
        .flat_map(|p| {
            p["properties"]["loadBalancerBackendAddresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| a["name"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

fn has_frontend_of(sim: &AzureSim, lb_name: &str, uid: &str) -> bool {
    let mut base = format!("a{}", uid.replace('-', ""));
    base.truncate(32);
    lb(sim, lb_name).is_some_and(|v| {
        v["properties"]["frontendIPConfigurations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["name"].as_str().unwrap_or_default().starts_with(&base))
    })
}

#[tokio::test]
async fn multiple_standard_load_balancers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("azure_cloud=info")
        .with_test_writer()
        .try_init();
    let (sim, cloud, _d) = setup(
        &Scenario::default_cluster(),
        json!({
            "loadBalancerBackendPoolConfigurationType": "nodeIP",
            "multipleStandardLoadBalancerConfigurations": [
                {"name": "kubernetes"},
                {"name": "lb2", "primaryVMSet": "k8s-pool2-avset"},
                {"name": "lb3", "serviceLabelSelector": {"matchLabels": {"tier": "gold"}}},
            ],
        }),
    )
    .await;
    let nodes = Arc::new(nodes(&cloud, &DEFAULT_NODES).await);
    // A burst of 6 plain Services spreads over the two LBs that take them (fewest rules, counting the ones
    // on their way), not all on the first.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (cloud, nodes) = (cloud.clone(), nodes.clone());
        tasks.push(tokio::spawn(async move {
            let svc = service(&format!("s{i}"), &uid(300 + i), &[80], json!({}));
            cloud.ensure_load_balancer(CLUSTER, &svc, &nodes).await
        }));
    }
    let mut ips = std::collections::BTreeSet::new();
    for t in tasks {
        ips.extend(ingress(&t.await.unwrap().unwrap()));
    }
    assert_eq!(ips.len(), 6);
    let on = |name: &str| (0..6).filter(|i| has_frontend_of(&sim, name, &uid(300 + i))).count();
    let fes = |n: &str| {
        lb(&sim, n).map(|v| {
            v["properties"]["frontendIPConfigurations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
    };
    let log: Vec<String> = sim
        .calls()
        .iter()
        .filter(|c| c.path.contains("loadBalancers"))
        .map(|c| format!("{} {} {} {}", c.t_ms, c.method, c.status, c.path))
        .collect();
    assert_eq!(
        (on("kubernetes"), on("lb2"), on("lb3")),
        (3, 3, 0),
        "{:?} {:?} {log:#?}",
        fes("kubernetes"),
        fes("lb2")
    );
    // A gold Service goes to the LB selecting it; one naming lb2 goes there.
    let gold = labelled(service("gold", &uid(310), &[443], json!({})), json!({"tier": "gold"}));
    let gold_ip = ingress(&cloud.ensure_load_balancer(CLUSTER, &gold, &nodes).await.unwrap());
    assert!(has_frontend_of(&sim, "lb3", &uid(310)));
    let pinned = service(
        "pinned",
        &uid(311),
        &[8080],
        json!({"service.beta.kubernetes.io/azure-load-balancer-configurations": "lb2"}),
    );
    cloud.ensure_load_balancer(CLUSTER, &pinned, &nodes).await.unwrap();
    assert!(has_frontend_of(&sim, "lb2", &uid(311)));
    // An internal Service uses `<name>-internal`.
    let internal = service(
        "int",
        &uid(312),
        &[80],
        json!({"service.beta.kubernetes.io/azure-load-balancer-internal": "true"}),
    );
    let internal_ip = ingress(&cloud.ensure_load_balancer(CLUSTER, &internal, &nodes).await.unwrap());
    assert!(has_frontend_of(&sim, "kubernetes-internal", &uid(312)));

    // Nodes: the availability set's on lb2 (its primary VM set); every node in exactly one public LB's pool,
    // the internal LB's pool the same as its public counterpart's.
    let (k, l2, l3) = (
        pool_members(&sim, "kubernetes"),
        pool_members(&sim, "lb2"),
        pool_members(&sim, "lb3"),
    );
    assert!(
        l2.contains(&"k8s-pool2-0".to_string()) && l2.contains(&"k8s-pool2-1".to_string()),
        "{l2:?}"
    );
    let mut all: Vec<String> = k.iter().chain(&l2).chain(&l3).cloned().collect();
    all.sort();
    let mut want: Vec<String> = DEFAULT_NODES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(all, want, "kubernetes {k:?} lb2 {l2:?} lb3 {l3:?}");
    assert_eq!(pool_members(&sim, "kubernetes-internal"), k);

    // Everything converged: a second pass writes nothing.
    sim.reset_calls();
    let everyone: Vec<Service> = (0..6)
        .map(|i| service(&format!("s{i}"), &uid(300 + i), &[80], json!({})))
        .chain([gold.clone(), pinned.clone(), internal.clone()])
        .collect();
    for s in &everyone {
        cloud.ensure_load_balancer(CLUSTER, s, &nodes).await.unwrap();
    }
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));

    // The gold Service loses its label: it moves off lb3 keeping its IP, and lb3 (now empty) is deleted.
    let plain = labelled(gold.clone(), json!({}));
    assert_eq!(
        ingress(&cloud.ensure_load_balancer(CLUSTER, &plain, &nodes).await.unwrap()),
        gold_ip
    );
    assert!(lb(&sim, "lb3").is_none(), "the empty LB is deleted");
    assert!(has_frontend_of(&sim, "kubernetes", &uid(310)) || has_frontend_of(&sim, "lb2", &uid(310)));
    // Node placement covers every configured LB, existing or not (a new LB must start with its nodes): the
    // nodes of lb3 stay reserved for it, and come back into its pool when a gold Service recreates it.
    for s in &everyone[..6] {
        cloud.update_load_balancer(CLUSTER, s, &nodes).await.unwrap();
    }
    let mut rest: Vec<String> = [pool_members(&sim, "kubernetes"), pool_members(&sim, "lb2")].concat();
    rest.sort();
    let mut expected: Vec<String> = want.iter().filter(|n| !l3.contains(n)).cloned().collect();
    expected.sort();
    assert_eq!(rest, expected);
    let gold2 = labelled(service("gold2", &uid(313), &[443], json!({})), json!({"tier": "gold"}));
    cloud.ensure_load_balancer(CLUSTER, &gold2, &nodes).await.unwrap();
    assert_eq!(pool_members(&sim, "lb3"), l3);
    cloud.ensure_load_balancer_deleted(CLUSTER, &gold2).await.unwrap();
    assert!(lb(&sim, "lb3").is_none());

    // Bad requests are errors on the Service, nothing written.
    sim.reset_calls();
    for (bad, says) in [
        (
            service(
                "x",
                &uid(320),
                &[80],
                json!({"service.beta.kubernetes.io/azure-load-balancer-configurations": "nope"}),
            ),
            "\"nope\"",
        ),
        (
            service(
                "y",
                &uid(321),
                &[80],
                json!({"service.beta.kubernetes.io/azure-load-balancer-configurations": "lb2", "service.beta.kubernetes.io/azure-load-balancer-internal": "true", "service.beta.kubernetes.io/azure-load-balancer-ipv4": "10.240.0.50"}),
            ),
            "cannot be combined",
        ),
    ] {
        let e = cloud.ensure_load_balancer(CLUSTER, &bad, &nodes).await.unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    assert_eq!(total_writes(&sim), 0, "{:?}", writes(&sim));

    // Status reads find the Services wherever they are; deleting every Service leaves nothing.
    let st = cloud.get_load_balancer(CLUSTER, &internal).await.unwrap().unwrap();
    assert_eq!(ingress(&st), internal_ip);
    for s in everyone.iter().chain([&plain]) {
        cloud.ensure_load_balancer_deleted(CLUSTER, s).await.unwrap();
    }
    for name in ["lb2", "lb3", "lb2-internal"] {
        assert!(lb(&sim, name).is_none(), "{name} left");
    }
    assert_no_leftovers(&sim);
}
