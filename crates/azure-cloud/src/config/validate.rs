//! Validation: every rule a config must pass, with the key named and secrets never echoed; the value
//! lists, values refused as not implemented, and keys accepted without effect.

use super::*;

/// Supported `vmType` values.
pub const VM_TYPES: &[&str] = &["standard", "vmss", "vmssflex"];
/// Supported `loadBalancerSku` values.
pub const LB_SKUS: &[&str] = &["basic", "standard"];
/// Supported `loadBalancerBackendPoolConfigurationType` values.
pub const BACKEND_POOL_TYPES: &[&str] = &["nodeIPConfiguration", "nodeIP"];

/// Values upstream accepts that this provider does not implement yet: refused by validation (never run as
/// something else). (key, value, what to do).
pub const NOT_IMPLEMENTED_VALUES: &[(&str, &str, &str)] = &[
    (
        "loadBalancerSku",
        "service",
        "per-service load balancer selection is not supported yet; use basic or standard",
    ),
    (
        "loadBalancerBackendPoolConfigurationType",
        "podIP",
        "pod-IP backend pools are not supported yet; use nodeIPConfiguration or nodeIP",
    ),
];

/// The smallest accepted `cloudProviderRateLimitQPS*` (one request per 1,000 s): smaller values cannot be
/// honoured by a token bucket in any useful way.
pub const MIN_RATE_LIMIT_QPS: f64 = 0.001;

/// Keys that are parsed (upstream accepts them) but have no effect in this provider yet, with why: each
/// present in a config is reported as a warning by name (never silently ignored). Listed in
/// docs/configuration.md under "Accepted without effect".
pub const NO_EFFECT_KEYS: &[(&str, &str)] = &[
    (
        "vmssFlexCacheTTLInSeconds",
        "flexible scale sets are listed with the uniform ones (vmssCacheTTLInSeconds)",
    ),
    (
        "availabilitySetsCacheTTLInSeconds",
        "availability sets are read from the VM list (nonVmssUniformNodesCacheTTLInSeconds)",
    ),
    (
        "availabilitySetNodesCacheTTLInSeconds",
        "legacy name; nonVmssUniformNodesCacheTTLInSeconds applies",
    ),
    ("disableAPICallCache", "ARM answers are always cached with their TTLs"),
    ("enableMigrateToIPBasedBackendPoolAPI", "backend pools are not migrated"),
    (
        "routeUpdateIntervalInSeconds",
        "route changes are group-committed as they arrive",
    ),
    (
        "routeUpdateWaitingInSeconds",
        "route changes are group-committed as they arrive",
    ),
    (
        "loadBalancerBackendPoolUpdateIntervalInSeconds",
        "the per-Service backend pools of externalTrafficPolicy Local Services under multiple standard load balancers are not implemented",
    ),
    (
        "enableMultipleStandardLoadBalancers",
        "one standard load balancer per VM set is not supported",
    ),
    ("disableAzureStackCloud", "accepted for compatibility"),
    ("enableMinimumRetryAfter", "Retry-After is always honoured"),
];
/// Supported `preConfiguredBackendPoolLoadBalancerTypes` values.
pub const PRECONFIGURED_POOL_TYPES: &[&str] = &["", "internal", "external", "all"];
/// Supported `clusterServiceLoadBalancerHealthProbeMode` values.
pub const HEALTH_PROBE_MODES: &[&str] = &["servicenodeport", "shared"];
/// Supported `identitySystem` values.
pub const IDENTITY_SYSTEMS: &[&str] = &["azure_ad", "adfs"];

impl CloudConfig {
    /// All validation errors (empty when valid). Called by [`CloudConfig::parse`] after defaults.
    pub fn validate(&self) -> Vec<ValidationError> {
        let mut errs = Vec::new();
        let mut err = |key: &'static str, value: &str, rule: String| {
            errs.push(ValidationError {
                key,
                value: if SECRET_KEYS.contains(&key) {
                    String::new()
                } else {
                    value.to_string()
                },
                rule,
            })
        };
        let one_of = |list: &[&str]| {
            format!(
                "is not one of: {}",
                list.iter()
                    .map(|v| if v.is_empty() { "\"\"" } else { v })
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let not_implemented = |key: &str, value: &str| {
            NOT_IMPLEMENTED_VALUES
                .iter()
                .find(|(k, v, _)| *k == key && v.eq_ignore_ascii_case(value))
                .map(|(_, _, why)| format!("is not implemented: {why}"))
        };
        for (key, value, list) in [
            ("vmType", &self.vm_type, VM_TYPES),
            ("loadBalancerSku", &self.load_balancer_sku, LB_SKUS),
            (
                "loadBalancerBackendPoolConfigurationType",
                &self.load_balancer_backend_pool_configuration_type,
                BACKEND_POOL_TYPES,
            ),
        ] {
            if !list.contains(&value.as_str()) {
                err(key, value, not_implemented(key, value).unwrap_or_else(|| one_of(list)));
            }
        }
        // Features that change where resources go: refusing is safer than creating them elsewhere.
        if !self.extended_location_name.is_empty() {
            err(
                "extendedLocationName",
                &self.extended_location_name,
                "is not implemented: edge zones are not supported yet (resources would be created in the region)"
                    .into(),
            );
        }
        if !self.multiple_standard_load_balancer_configurations.is_empty() {
            let key = "multipleStandardLoadBalancerConfigurations";
            if let Err(e) = crate::loadbalancer::multislb::MultiSlb::from_config(
                &self.multiple_standard_load_balancer_configurations,
            ) {
                err(key, "", e);
            }
            // Upstream's preconditions: without them it would fall back to one load balancer, moving Services.
            if !self.is_standard_sku() {
                err(
                    key,
                    "",
                    "needs loadBalancerSku standard (multiple load balancers are a standard-SKU feature)".into(),
                );
            }
            if self.pool_type() != BackendPoolType::NodeIp {
                err(
                    key,
                    "",
                    "needs loadBalancerBackendPoolConfigurationType nodeIP (as upstream: nodes are placed in the pools by IP)"
                        .into(),
                );
            }
        }
        if self.uses_network_tenant() {
            let key = "networkResourceTenantID";
            // Upstream: a service principal only (managed and workload identities get tokens for their own
            // tenant); the network resources need their own subscription.
            if !matches!(
                self.credential_kind(),
                CredentialKind::ClientSecret | CredentialKind::ClientCertificate
            ) {
                err(
                    key,
                    &self.network_resource_tenant_id,
                    format!(
                        "needs a service principal (aadClientSecret or aadClientCertPath) that can sign in to both tenants; the configured credential is {:?}",
                        self.credential_kind()
                    ),
                );
            }
            if self.network_resource_subscription_id.is_empty()
                || self
                    .network_resource_subscription_id
                    .eq_ignore_ascii_case(&self.subscription_id)
            {
                err(
                    key,
                    &self.network_resource_tenant_id,
                    "needs networkResourceSubscriptionID (the network resources' subscription, in that tenant)".into(),
                );
            }
            if self.is_adfs() {
                err(
                    key,
                    &self.network_resource_tenant_id,
                    "is not supported with ADFS (Azure Stack has one tenant)".into(),
                );
            }
        }
        if self.disable_outbound_snat == Some(true) && !self.is_standard_sku() {
            err(
                "disableOutboundSNAT",
                "true",
                format!(
                    "is only supported with loadBalancerSku standard (loadBalancerSku is {:?})",
                    self.load_balancer_sku
                ),
            );
        }
        if self.disable_availability_set_nodes && self.vm_type != "vmss" {
            err(
                "disableAvailabilitySetNodes",
                "true",
                format!("is only supported with vmType vmss (vmType is {:?})", self.vm_type),
            );
        }
        if self.enable_vmss_flex_nodes && !self.vm_type.eq_ignore_ascii_case("vmss") {
            err(
                "enableVmssFlexNodes",
                "true",
                format!(
                    "is only meaningful with vmType vmss (mixed clusters; vmType is {:?}: use vmssflex for flexible scale sets only)",
                    self.vm_type
                ),
            );
        }
        if !PRECONFIGURED_POOL_TYPES.contains(&self.pre_configured_backend_pool_load_balancer_types.as_str()) {
            err(
                "preConfiguredBackendPoolLoadBalancerTypes",
                &self.pre_configured_backend_pool_load_balancer_types,
                one_of(PRECONFIGURED_POOL_TYPES),
            );
        }
        if !HEALTH_PROBE_MODES.contains(&self.cluster_service_load_balancer_health_probe_mode.as_str()) {
            err(
                "clusterServiceLoadBalancerHealthProbeMode",
                &self.cluster_service_load_balancer_health_probe_mode,
                one_of(HEALTH_PROBE_MODES),
            );
        }
        if !(1..=65535).contains(&self.cluster_service_shared_load_balancer_health_probe_port) {
            err(
                "clusterServiceSharedLoadBalancerHealthProbePort",
                &self.cluster_service_shared_load_balancer_health_probe_port.to_string(),
                "must be a port number in 1..65535".into(),
            );
        }
        if !self
            .cluster_service_shared_load_balancer_health_probe_path
            .starts_with('/')
        {
            err(
                "clusterServiceSharedLoadBalancerHealthProbePath",
                &self.cluster_service_shared_load_balancer_health_probe_path,
                "must start with /".into(),
            );
        }
        if !IDENTITY_SYSTEMS.contains(&self.identity_system.to_lowercase().as_str()) {
            err("identitySystem", &self.identity_system, one_of(IDENTITY_SYSTEMS));
        }
        if CloudConfigType::parse(&self.cloud_config_type).is_none() {
            err(
                "cloudConfigType",
                &self.cloud_config_type,
                one_of(&["file", "secret", "merge"]),
            );
        }
        if self.credential_kind() == CredentialKind::None && !self.use_instance_metadata {
            err(
                "useInstanceMetadata",
                "false",
                "useInstanceMetadata must be enabled without Azure credentials (set aadClientId with \
                 aadClientSecret or aadClientCertPath, useManagedIdentityExtension, or a federated token file)"
                    .into(),
            );
        }
        if self.credential_kind() != CredentialKind::None {
            for (key, v) in [
                ("subscriptionId", &self.subscription_id),
                ("resourceGroup", &self.resource_group),
                ("location", &self.location),
            ] {
                if v.is_empty() {
                    err(key, "", "is required when Azure credentials are configured".into());
                }
            }
            if self.credential_kind() != CredentialKind::ManagedIdentity && self.tenant_id.is_empty() {
                err(
                    "tenantId",
                    "",
                    "is required for service-principal and workload-identity credentials".into(),
                );
            }
            if self.credential_kind() == CredentialKind::WorkloadIdentity && self.aad_client_id.is_empty() {
                err(
                    "aadClientId",
                    "",
                    "is required for workload identity (or set AZURE_CLIENT_ID)".into(),
                );
            }
        }
        if self.use_federated_workload_identity_extension && self.aad_federated_token_file.is_empty() {
            err(
                "aadFederatedTokenFile",
                "",
                "is required when useFederatedWorkloadIdentityExtension is true (or set AZURE_FEDERATED_TOKEN_FILE)"
                    .into(),
            );
        }
        if !self.aad_client_cert_password.is_empty() && self.aad_client_cert_path.is_empty() {
            err(
                "aadClientCertPath",
                "",
                "is required when aadClientCertPassword is set".into(),
            );
        }
        for (key, url) in [
            ("resourceManagerEndpoint", &self.resource_manager_endpoint),
            ("imdsEndpoint", &self.imds_endpoint),
        ] {
            if !url.is_empty() {
                match url::Url::parse(url) {
                    Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                    _ => err(key, url, "must be an absolute http(s) URL".into()),
                }
            }
        }
        if !self.resource_manager_endpoint.is_empty() && self.resource_manager_endpoint.starts_with("http://") {
            err(
                "resourceManagerEndpoint",
                &self.resource_manager_endpoint,
                "must use https (bearer tokens are never sent in clear)".into(),
            );
        }
        for (key, v) in [
            ("maximumLoadBalancerRuleCount", self.maximum_load_balancer_rule_count),
            ("putVMSSVMBatchSize", self.put_vmss_vm_batch_size),
            ("routeUpdateIntervalInSeconds", self.route_update_interval_in_seconds),
            ("routeUpdateWaitingInSeconds", self.route_update_waiting_in_seconds),
            (
                "loadBalancerBackendPoolUpdateIntervalInSeconds",
                self.load_balancer_backend_pool_update_interval_in_seconds,
            ),
            (
                "nodeInstanceNotFoundGracePeriodInSeconds",
                self.node_instance_not_found_grace_period_in_seconds,
            ),
            ("cloudProviderBackoffRetries", self.cloud_provider_backoff_retries),
            ("cloudProviderBackoffDuration", self.cloud_provider_backoff_duration),
            ("vmCacheTTLInSeconds", self.vm_cache_ttl_in_seconds),
            ("loadBalancerCacheTTLInSeconds", self.load_balancer_cache_ttl_in_seconds),
            ("nsgCacheTTLInSeconds", self.nsg_cache_ttl_in_seconds),
            ("routeTableCacheTTLInSeconds", self.route_table_cache_ttl_in_seconds),
            ("publicIPCacheTTLInSeconds", self.public_ip_cache_ttl_in_seconds),
            ("plsCacheTTLInSeconds", self.pls_cache_ttl_in_seconds),
            ("vmssCacheTTLInSeconds", self.vmss_cache_ttl_in_seconds),
            (
                "vmssVirtualMachinesCacheTTLInSeconds",
                self.vmss_virtual_machines_cache_ttl_in_seconds,
            ),
            (
                "availabilitySetsCacheTTLInSeconds",
                self.availability_sets_cache_ttl_in_seconds,
            ),
            ("vmssFlexCacheTTLInSeconds", self.vmss_flex_cache_ttl_in_seconds),
            ("vmssFlexVMCacheTTLInSeconds", self.vmss_flex_vm_cache_ttl_in_seconds),
            (
                "nonVmssUniformNodesCacheTTLInSeconds",
                self.non_vmss_uniform_nodes_cache_ttl_in_seconds,
            ),
            (
                "availabilitySetNodesCacheTTLInSeconds",
                self.availability_set_nodes_cache_ttl_in_seconds,
            ),
        ] {
            if v < 0 {
                err(key, &v.to_string(), "must not be negative".into());
            }
        }
        for (key, v) in [
            ("cloudProviderBackoffExponent", self.cloud_provider_backoff_exponent),
            ("cloudProviderBackoffJitter", self.cloud_provider_backoff_jitter),
        ] {
            if !(v.is_finite() && v > 0.0) {
                err(key, &v.to_string(), "must be a positive number".into());
            }
        }
        let mut check_rl = |prefix: &'static str, rl: &RateLimitConfig| {
            for (v, name) in [
                (rl.qps, "cloudProviderRateLimitQPS"),
                (rl.qps_write, "cloudProviderRateLimitQPSWrite"),
            ] {
                if let Some(q) = v {
                    if !(q.is_finite() && q >= MIN_RATE_LIMIT_QPS) {
                        err(
                            prefix,
                            &q.to_string(),
                            format!("{name} must be a number of at least {MIN_RATE_LIMIT_QPS} (requests per second)"),
                        );
                    }
                }
            }
            for (v, name) in [
                (rl.bucket, "cloudProviderRateLimitBucket"),
                (rl.bucket_write, "cloudProviderRateLimitBucketWrite"),
            ] {
                if let Some(b) = v {
                    if !(1..=i64::from(u32::MAX)).contains(&b) {
                        err(prefix, &b.to_string(), format!("{name} must be a positive integer"));
                    }
                }
            }
        };
        check_rl("cloudProviderRateLimit", &self.rate_limit);
        for key in ClientRateLimits::KEYS {
            if let Some(rl) = self.client_rate_limits.get(key) {
                check_rl(key, rl);
            }
        }
        errs
    }
}
