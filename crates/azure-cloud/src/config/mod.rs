//! azure.json: parsing (JSON or YAML, keys case-insensitive), defaults, validation and cloud environments.
//!
//! The struct [`CloudConfig`] is the single source of truth for the accepted keys: its serialised field
//! names are the canonical key names, used for case-insensitive matching, for the effective
//! configuration that `--check-config` prints, and checked against `docs/configuration.md` by a test.

mod cloud;
mod sources;
mod tags;

pub use cloud::{CloudEnvironment, EnvironmentError, KnownCloud, ENVIRONMENT_FILEPATH_ENV};
pub use sources::{merge_secret_config, CloudConfigType};
pub use tags::parse_tags;

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Errors from loading or validating azure.json.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cloud config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid JSON or YAML.
    #[error("cloud config is not valid {format} at line {line}, column {column}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// The document is larger than a config can be.
    #[error("cloud config is {bytes} bytes, more than the {limit} accepted")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The document is not a mapping of keys to values.
    #[error("cloud config must be a JSON object or YAML mapping of keys to values")]
    NotAnObject,
    /// A key has a value of the wrong type.
    #[error("{key}: {message}")]
    Type {
        /// The canonical key name (with a path for nested keys).
        key: String,
        /// What was wrong.
        message: String,
    },
    /// `cloudConfigType` is `secret` but the Secret has no config.
    #[error(
        "cloudConfigType is \"secret\" but the Secret kube-system/azure-cloud-provider has no key cloud-config: \
         create it, or set cloudConfigType to file or merge"
    )]
    MissingSecret,
    /// One or more validation rules failed.
    #[error("invalid cloud config:\n  {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<ValidationError>),
}

/// One failed validation rule. Secrets are never carried in `value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {value}{rule}", value = if .value.is_empty() { String::new() } else { format!("{:?} ", .value) })]
pub struct ValidationError {
    /// The canonical key name.
    pub key: &'static str,
    /// The offending value (empty where the rule is about absence or the value is secret).
    pub value: String,
    /// The rule, e.g. `is not one of: standard, vmss, vmssflex`.
    pub rule: String,
}

/// Per-client rate-limit settings (`cloudProviderRateLimit*` keys, also nested as `<client>RateLimit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimitConfig {
    /// Enables the token buckets.
    #[serde(rename = "cloudProviderRateLimit")]
    pub enabled: Option<bool>,
    /// Read refill rate (requests per second).
    #[serde(rename = "cloudProviderRateLimitQPS")]
    pub qps: Option<f64>,
    /// Read burst size.
    #[serde(rename = "cloudProviderRateLimitBucket")]
    pub bucket: Option<i64>,
    /// Write refill rate.
    #[serde(rename = "cloudProviderRateLimitQPSWrite")]
    pub qps_write: Option<f64>,
    /// Write burst size.
    #[serde(rename = "cloudProviderRateLimitBucketWrite")]
    pub bucket_write: Option<i64>,
}

/// The effective token-bucket settings of one client (after inheritance and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveRateLimit {
    /// Whether limiting is on for this client.
    pub enabled: bool,
    /// Read refill rate per second.
    pub qps: f64,
    /// Read burst.
    pub bucket: u32,
    /// Write refill rate per second.
    pub qps_write: f64,
    /// Write burst.
    pub bucket_write: u32,
}

/// One entry of `multipleStandardLoadBalancerConfigurations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MultipleStandardLoadBalancerConfiguration {
    /// LB name.
    pub name: String,
    /// The VM set whose nodes are this LB's backends.
    #[serde(rename = "primaryVMSet")]
    pub primary_vm_set: String,
    /// Whether new services may be placed on this LB.
    #[serde(rename = "allowServicePlacement")]
    pub allow_service_placement: Option<bool>,
    /// Label selector of the services placed on this LB.
    #[serde(rename = "serviceLabelSelector")]
    pub service_label_selector: Option<Value>,
    /// Namespace selector of the services placed on this LB.
    #[serde(rename = "serviceNamespaceSelector")]
    pub service_namespace_selector: Option<Value>,
    /// Node selector of the backends.
    #[serde(rename = "nodeSelector")]
    pub node_selector: Option<Value>,
}

macro_rules! rate_limit_clients {
    ($($field:ident => $key:literal),* $(,)?) => {
        /// Per-client rate-limit overrides (`<client>RateLimit` keys).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ClientRateLimits {
            $(
                #[doc = concat!("`", $key, "`")]
                #[serde(rename = $key)]
                pub $field: Option<RateLimitConfig>,
            )*
        }

        impl ClientRateLimits {
            /// The override of the client named by its key (e.g. `loadBalancerRateLimit`).
            pub fn get(&self, key: &str) -> Option<&RateLimitConfig> {
                match key {
                    $($key => self.$field.as_ref(),)*
                    _ => None,
                }
            }

            /// Every per-client key.
            pub const KEYS: &'static [&'static str] = &[$($key),*];
        }
    };
}

rate_limit_clients! {
    route => "routeRateLimit",
    subnets => "subnetsRateLimit",
    interface => "interfaceRateLimit",
    route_table => "routeTableRateLimit",
    load_balancer => "loadBalancerRateLimit",
    public_ip_address => "publicIPAddressRateLimit",
    security_group => "securityGroupRateLimit",
    virtual_machine => "virtualMachineRateLimit",
    storage_account => "storageAccountRateLimit",
    disk => "diskRateLimit",
    snapshot => "snapshotRateLimit",
    virtual_machine_scale_set => "virtualMachineScaleSetRateLimit",
    virtual_machine_sizes => "virtualMachineSizesRateLimit",
}

/// The parsed azure.json. Field names serialise to the canonical key names.
/// After [`CloudConfig::parse`] every default is applied and every rule validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)] // each key is documented in docs/configuration.md, checked by a test
pub struct CloudConfig {
    // --- environment and credentials
    #[serde(rename = "cloud")]
    pub cloud: String,
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    #[serde(rename = "subscriptionId")]
    pub subscription_id: String,
    #[serde(rename = "aadClientId")]
    pub aad_client_id: String,
    #[serde(rename = "aadClientSecret")]
    pub aad_client_secret: Secret,
    #[serde(rename = "aadClientCertPath")]
    pub aad_client_cert_path: String,
    #[serde(rename = "aadClientCertPassword")]
    pub aad_client_cert_password: Secret,
    #[serde(rename = "useManagedIdentityExtension")]
    pub use_managed_identity_extension: bool,
    #[serde(rename = "userAssignedIdentityID")]
    pub user_assigned_identity_id: String,
    #[serde(rename = "aadFederatedTokenFile")]
    pub aad_federated_token_file: String,
    #[serde(rename = "useFederatedWorkloadIdentityExtension")]
    pub use_federated_workload_identity_extension: bool,
    #[serde(rename = "identitySystem")]
    pub identity_system: String,
    #[serde(rename = "resourceManagerEndpoint")]
    pub resource_manager_endpoint: String,
    #[serde(rename = "networkResourceTenantID")]
    pub network_resource_tenant_id: String,
    #[serde(rename = "networkResourceSubscriptionID")]
    pub network_resource_subscription_id: String,
    #[serde(rename = "trustedCACertPath")]
    pub trusted_ca_cert_path: String,
    #[serde(rename = "imdsEndpoint")]
    pub imds_endpoint: String,
    // --- cluster resources
    #[serde(rename = "resourceGroup")]
    pub resource_group: String,
    #[serde(rename = "location")]
    pub location: String,
    #[serde(rename = "vnetName")]
    pub vnet_name: String,
    #[serde(rename = "vnetResourceGroup")]
    pub vnet_resource_group: String,
    #[serde(rename = "subnetName")]
    pub subnet_name: String,
    #[serde(rename = "securityGroupName")]
    pub security_group_name: String,
    #[serde(rename = "securityGroupResourceGroup")]
    pub security_group_resource_group: String,
    #[serde(rename = "routeTableName")]
    pub route_table_name: String,
    #[serde(rename = "routeTableResourceGroup")]
    pub route_table_resource_group: String,
    #[serde(rename = "primaryAvailabilitySetName")]
    pub primary_availability_set_name: String,
    #[serde(rename = "primaryScaleSetName")]
    pub primary_scale_set_name: String,
    #[serde(rename = "vmType")]
    pub vm_type: String,
    // --- load balancers
    #[serde(rename = "loadBalancerSku")]
    pub load_balancer_sku: String,
    #[serde(rename = "loadBalancerName")]
    pub load_balancer_name: String,
    #[serde(rename = "loadBalancerResourceGroup")]
    pub load_balancer_resource_group: String,
    #[serde(rename = "excludeMasterFromStandardLB")]
    pub exclude_master_from_standard_lb: Option<bool>,
    #[serde(rename = "disableOutboundSNAT")]
    pub disable_outbound_snat: Option<bool>,
    #[serde(rename = "maximumLoadBalancerRuleCount")]
    pub maximum_load_balancer_rule_count: i64,
    #[serde(rename = "useInstanceMetadata")]
    pub use_instance_metadata: bool,
    #[serde(rename = "preConfiguredBackendPoolLoadBalancerTypes")]
    pub pre_configured_backend_pool_load_balancer_types: String,
    #[serde(rename = "disableAvailabilitySetNodes")]
    pub disable_availability_set_nodes: bool,
    #[serde(rename = "enableVmssFlexNodes")]
    pub enable_vmss_flex_nodes: bool,
    #[serde(rename = "enableMultipleStandardLoadBalancers")]
    pub enable_multiple_standard_load_balancers: bool,
    #[serde(rename = "tags")]
    pub tags: String,
    #[serde(rename = "tagsMap")]
    pub tags_map: BTreeMap<String, String>,
    #[serde(rename = "systemTags")]
    pub system_tags: String,
    #[serde(rename = "loadBalancerBackendPoolConfigurationType")]
    pub load_balancer_backend_pool_configuration_type: String,
    #[serde(rename = "putVMSSVMBatchSize")]
    pub put_vmss_vm_batch_size: i64,
    #[serde(rename = "enableMigrateToIPBasedBackendPoolAPI")]
    pub enable_migrate_to_ip_based_backend_pool_api: bool,
    #[serde(rename = "multipleStandardLoadBalancerConfigurations")]
    pub multiple_standard_load_balancer_configurations: Vec<MultipleStandardLoadBalancerConfiguration>,
    #[serde(rename = "clusterServiceLoadBalancerHealthProbeMode")]
    pub cluster_service_load_balancer_health_probe_mode: String,
    #[serde(rename = "clusterServiceSharedLoadBalancerHealthProbePort")]
    pub cluster_service_shared_load_balancer_health_probe_port: i64,
    #[serde(rename = "clusterServiceSharedLoadBalancerHealthProbePath")]
    pub cluster_service_shared_load_balancer_health_probe_path: String,
    #[serde(rename = "routeUpdateIntervalInSeconds")]
    pub route_update_interval_in_seconds: i64,
    #[serde(rename = "routeUpdateWaitingInSeconds")]
    pub route_update_waiting_in_seconds: i64,
    #[serde(rename = "loadBalancerBackendPoolUpdateIntervalInSeconds")]
    pub load_balancer_backend_pool_update_interval_in_seconds: i64,
    #[serde(rename = "nodeInstanceNotFoundGracePeriodInSeconds")]
    pub node_instance_not_found_grace_period_in_seconds: i64,
    #[serde(rename = "privateLinkServiceResourceGroup")]
    pub private_link_service_resource_group: String,
    #[serde(rename = "extendedLocationName")]
    pub extended_location_name: String,
    #[serde(rename = "extendedLocationType")]
    pub extended_location_type: String,
    // --- client behaviour
    #[serde(rename = "userAgent")]
    pub user_agent: String,
    #[serde(rename = "disableAzureStackCloud")]
    pub disable_azure_stack_cloud: bool,
    #[serde(rename = "enableMinimumRetryAfter")]
    pub enable_minimum_retry_after: bool,
    #[serde(rename = "cloudProviderBackoff")]
    pub cloud_provider_backoff: bool,
    #[serde(rename = "cloudProviderBackoffRetries")]
    pub cloud_provider_backoff_retries: i64,
    #[serde(rename = "cloudProviderBackoffExponent")]
    pub cloud_provider_backoff_exponent: f64,
    #[serde(rename = "cloudProviderBackoffDuration")]
    pub cloud_provider_backoff_duration: i64,
    #[serde(rename = "cloudProviderBackoffJitter")]
    pub cloud_provider_backoff_jitter: f64,
    #[serde(flatten)]
    pub rate_limit: RateLimitConfig,
    #[serde(flatten)]
    pub client_rate_limits: ClientRateLimits,
    // --- caches
    #[serde(rename = "vmCacheTTLInSeconds")]
    pub vm_cache_ttl_in_seconds: i64,
    #[serde(rename = "loadBalancerCacheTTLInSeconds")]
    pub load_balancer_cache_ttl_in_seconds: i64,
    #[serde(rename = "nsgCacheTTLInSeconds")]
    pub nsg_cache_ttl_in_seconds: i64,
    #[serde(rename = "routeTableCacheTTLInSeconds")]
    pub route_table_cache_ttl_in_seconds: i64,
    #[serde(rename = "publicIPCacheTTLInSeconds")]
    pub public_ip_cache_ttl_in_seconds: i64,
    #[serde(rename = "plsCacheTTLInSeconds")]
    pub pls_cache_ttl_in_seconds: i64,
    #[serde(rename = "vmssCacheTTLInSeconds")]
    pub vmss_cache_ttl_in_seconds: i64,
    #[serde(rename = "vmssVirtualMachinesCacheTTLInSeconds")]
    pub vmss_virtual_machines_cache_ttl_in_seconds: i64,
    #[serde(rename = "availabilitySetsCacheTTLInSeconds")]
    pub availability_sets_cache_ttl_in_seconds: i64,
    #[serde(rename = "vmssFlexCacheTTLInSeconds")]
    pub vmss_flex_cache_ttl_in_seconds: i64,
    #[serde(rename = "vmssFlexVMCacheTTLInSeconds")]
    pub vmss_flex_vm_cache_ttl_in_seconds: i64,
    #[serde(rename = "nonVmssUniformNodesCacheTTLInSeconds")]
    pub non_vmss_uniform_nodes_cache_ttl_in_seconds: i64,
    #[serde(rename = "availabilitySetNodesCacheTTLInSeconds")]
    pub availability_set_nodes_cache_ttl_in_seconds: i64,
    #[serde(rename = "disableAPICallCache")]
    pub disable_api_call_cache: bool,
    #[serde(rename = "listVmssVirtualMachinesWithoutInstanceView")]
    pub list_vmss_virtual_machines_without_instance_view: bool,
    // --- config sources
    #[serde(rename = "cloudConfigType")]
    pub cloud_config_type: String,
}

/// Names the environment variables that override config keys; a function so tests need not touch
/// the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Environment variables that override keys: (variable, key).
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("AZURE_TENANT_ID", "tenantId"),
    ("AZURE_CLIENT_ID", "aadClientId"),
    ("AZURE_CLIENT_SECRET", "aadClientSecret"),
    ("AZURE_FEDERATED_TOKEN_FILE", "aadFederatedTokenFile"),
];

/// Keys whose values are secret: redacted from errors and output.
pub const SECRET_KEYS: &[&str] = &["aadClientSecret", "aadClientCertPassword"];

/// Supported `vmType` values.
pub const VM_TYPES: &[&str] = &["standard", "vmss"];
/// Supported `loadBalancerSku` values.
pub const LB_SKUS: &[&str] = &["basic", "standard"];
/// Supported `loadBalancerBackendPoolConfigurationType` values.
pub const BACKEND_POOL_TYPES: &[&str] = &["nodeIPConfiguration", "nodeIP"];

/// Values upstream accepts that this provider does not implement yet: refused by validation (never run as
/// something else). (key, value, what to do).
pub const NOT_IMPLEMENTED_VALUES: &[(&str, &str, &str)] = &[
    (
        "vmType",
        "vmssflex",
        "flexible scale sets are not supported yet; use vmType standard or vmss",
    ),
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
        "enableVmssFlexNodes",
        "flexible scale sets are not supported yet; flex VMs are not handled",
    ),
    ("vmssFlexCacheTTLInSeconds", "flexible scale sets are not supported yet"),
    (
        "vmssFlexVMCacheTTLInSeconds",
        "flexible scale sets are not supported yet",
    ),
    (
        "availabilitySetsCacheTTLInSeconds",
        "availability sets are read from the VM list (nonVmssUniformNodesCacheTTLInSeconds)",
    ),
    (
        "availabilitySetNodesCacheTTLInSeconds",
        "legacy name; nonVmssUniformNodesCacheTTLInSeconds applies",
    ),
    (
        "nsgCacheTTLInSeconds",
        "the security group copy follows loadBalancerCacheTTLInSeconds",
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
        "multiple standard load balancers are not supported yet",
    ),
    (
        "enableMultipleStandardLoadBalancers",
        "one standard load balancer per VM set is not supported",
    ),
    (
        "privateLinkServiceResourceGroup",
        "Private Link Service is not supported yet",
    ),
    ("plsCacheTTLInSeconds", "Private Link Service is not supported yet"),
    (
        "systemTags",
        "tags are set at creation and never removed, so there is nothing to protect",
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

/// The default IMDS endpoint.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// What parsing found that is worth a warning but not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParseReport {
    /// Keys not recognised (ignored), as written in the file.
    pub unknown_keys: Vec<String>,
    /// Other warnings (malformed tags, unknown cloud names, ...).
    pub warnings: Vec<String>,
}

/// Which credential the configuration selects, in upstream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// Federated token file (workload identity).
    WorkloadIdentity,
    /// IMDS managed identity (system-assigned when the id is empty).
    ManagedIdentity,
    /// Service principal with a client secret.
    ClientSecret,
    /// Service principal with a PFX/PEM certificate.
    ClientCertificate,
    /// No ARM credentials (kubelet-side config: IMDS only).
    None,
}

impl CloudConfig {
    /// Every canonical key, in declaration order.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(CloudConfig::default()) {
            Ok(Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Reads, parses, defaults and validates a file, then applies the environment overrides.
    pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<(Self, ParseReport), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Parses text (JSON or YAML), applies env overrides and defaults, validates.
    pub fn parse(text: &str, env: EnvLookup<'_>) -> Result<(Self, ParseReport), ConfigError> {
        let doc = parse_document(text)?;
        Self::from_document(doc, env)
    }

    /// Builds a config from a parsed document (used by the Secret merge too).
    pub fn from_document(doc: Value, env: EnvLookup<'_>) -> Result<(Self, ParseReport), ConfigError> {
        let mut report = ParseReport::default();
        let normalised = normalise_keys(doc, &mut report)?;
        if let Value::Object(m) = &normalised {
            for (key, why) in NO_EFFECT_KEYS {
                if m.contains_key(*key) {
                    report
                        .warnings
                        .push(format!("{key} is accepted but has no effect: {why}"));
                }
            }
            check_rate_limit_types(m)?;
        }
        let mut cfg: CloudConfig = deserialize_named(normalised)?;
        cfg.apply_env(env);
        cfg.apply_defaults(&mut report);
        let errors = cfg.validate();
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        Ok((cfg, report))
    }

    fn apply_env(&mut self, env: EnvLookup<'_>) {
        if let Some(v) = env("AZURE_TENANT_ID") {
            self.tenant_id = v;
        }
        if let Some(v) = env("AZURE_CLIENT_ID") {
            self.aad_client_id = v;
        }
        if let Some(v) = env("AZURE_CLIENT_SECRET") {
            self.aad_client_secret = Secret::new(v);
        }
        if let Some(v) = env("AZURE_FEDERATED_TOKEN_FILE") {
            self.aad_federated_token_file = v;
            self.use_federated_workload_identity_extension = true;
        }
    }

    fn apply_defaults(&mut self, report: &mut ParseReport) {
        self.resource_group = self.resource_group.to_lowercase();
        fn or_rg(v: &mut String, rg: &str) {
            if v.is_empty() {
                *v = rg.to_string();
            }
        }
        let rg = self.resource_group.clone();
        or_rg(&mut self.route_table_resource_group, &rg);
        or_rg(&mut self.security_group_resource_group, &rg);
        or_rg(&mut self.vnet_resource_group, &rg);
        or_rg(&mut self.load_balancer_resource_group, &rg);
        or_rg(&mut self.private_link_service_resource_group, &rg);
        if self.cloud.is_empty() {
            self.cloud = "AzurePublicCloud".into();
        } else if KnownCloud::from_name(&self.cloud).is_none() {
            report.warnings.push(format!(
                "cloud {:?} is not a known cloud name; using AzurePublicCloud as upstream does",
                self.cloud
            ));
        }
        if self.identity_system.is_empty() {
            self.identity_system = "azure_ad".into();
        }
        if self.imds_endpoint.is_empty() {
            self.imds_endpoint = DEFAULT_IMDS_ENDPOINT.into();
        }
        self.vm_type = if self.vm_type.is_empty() {
            "vmss".into()
        } else {
            self.vm_type.to_lowercase()
        };
        self.load_balancer_sku = if self.load_balancer_sku.is_empty() {
            "standard".into()
        } else {
            self.load_balancer_sku.to_lowercase()
        };
        if self.is_standard_sku() {
            self.exclude_master_from_standard_lb.get_or_insert(true);
            self.disable_outbound_snat.get_or_insert(false);
        }
        if self.maximum_load_balancer_rule_count == 0 {
            self.maximum_load_balancer_rule_count = 250;
        }
        if self.load_balancer_backend_pool_configuration_type.is_empty() {
            self.load_balancer_backend_pool_configuration_type = "nodeIPConfiguration".into();
        } else if let Some(v) = BACKEND_POOL_TYPES
            .iter()
            .find(|v| v.eq_ignore_ascii_case(&self.load_balancer_backend_pool_configuration_type))
        {
            self.load_balancer_backend_pool_configuration_type = (*v).into();
        }
        self.pre_configured_backend_pool_load_balancer_types =
            self.pre_configured_backend_pool_load_balancer_types.to_lowercase();
        if self.cluster_service_load_balancer_health_probe_mode.is_empty() {
            self.cluster_service_load_balancer_health_probe_mode = "servicenodeport".into();
        } else {
            self.cluster_service_load_balancer_health_probe_mode =
                self.cluster_service_load_balancer_health_probe_mode.to_lowercase();
        }
        if self.cluster_service_shared_load_balancer_health_probe_port == 0 {
            self.cluster_service_shared_load_balancer_health_probe_port = 10256;
        }
        if self.cluster_service_shared_load_balancer_health_probe_path.is_empty() {
            self.cluster_service_shared_load_balancer_health_probe_path = "/healthz".into();
        }
        for (v, d) in [
            (&mut self.route_update_interval_in_seconds, 30),
            (&mut self.route_update_waiting_in_seconds, 30),
            (&mut self.load_balancer_backend_pool_update_interval_in_seconds, 30),
            (&mut self.vm_cache_ttl_in_seconds, 60),
            (&mut self.load_balancer_cache_ttl_in_seconds, 120),
            (&mut self.nsg_cache_ttl_in_seconds, 120),
            (&mut self.route_table_cache_ttl_in_seconds, 120),
            (&mut self.public_ip_cache_ttl_in_seconds, 120),
            (&mut self.pls_cache_ttl_in_seconds, 120),
            (&mut self.vmss_cache_ttl_in_seconds, 600),
            (&mut self.vmss_virtual_machines_cache_ttl_in_seconds, 600),
            (&mut self.availability_sets_cache_ttl_in_seconds, 600),
            (&mut self.vmss_flex_cache_ttl_in_seconds, 600),
            (&mut self.vmss_flex_vm_cache_ttl_in_seconds, 600),
            (&mut self.non_vmss_uniform_nodes_cache_ttl_in_seconds, 900),
            (&mut self.availability_set_nodes_cache_ttl_in_seconds, 900),
        ] {
            if *v == 0 {
                *v = d;
            }
        }
        // Backoff: upstream defaults when enabled; M's SDK retry defaults otherwise.
        if self.cloud_provider_backoff_retries == 0 {
            self.cloud_provider_backoff_retries = if self.cloud_provider_backoff { 6 } else { 3 };
        }
        if self.cloud_provider_backoff_exponent == 0.0 {
            self.cloud_provider_backoff_exponent = 1.5;
        }
        if self.cloud_provider_backoff_duration == 0 {
            self.cloud_provider_backoff_duration = 5;
        }
        if self.cloud_provider_backoff_jitter == 0.0 {
            self.cloud_provider_backoff_jitter = 1.0;
        }
        let rl = &mut self.rate_limit;
        rl.enabled.get_or_insert(false);
        if rl.enabled == Some(true) {
            rl.qps.get_or_insert(1.0);
            rl.bucket.get_or_insert(5);
            let (q, b) = (rl.qps, rl.bucket);
            if rl.qps_write.is_none() {
                rl.qps_write = q;
            }
            if rl.bucket_write.is_none() {
                rl.bucket_write = b;
            }
        }
        if self.cloud_config_type.is_empty() {
            self.cloud_config_type = "merge".into();
        } else {
            self.cloud_config_type = self.cloud_config_type.to_lowercase();
        }
        if !self.user_assigned_identity_id.is_empty() && !self.use_managed_identity_extension {
            report
                .warnings
                .push("userAssignedIdentityID is set but useManagedIdentityExtension is false: it is ignored".into());
        }
        let (_, tag_warnings) = parse_tags(&self.tags, &self.tags_map);
        report.warnings.extend(tag_warnings);
    }

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
            err(
                "multipleStandardLoadBalancerConfigurations",
                "",
                "is not implemented: multiple standard load balancers are not supported yet (services would move to one load balancer)".into(),
            );
        }
        if !self.network_resource_tenant_id.is_empty()
            && !self.network_resource_tenant_id.eq_ignore_ascii_case(&self.tenant_id)
        {
            err(
                "networkResourceTenantID",
                &self.network_resource_tenant_id,
                "is not implemented: network resources in another tenant (auxiliary tokens) are not supported yet"
                    .into(),
            );
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

    /// True for the standard LB SKU.
    pub fn is_standard_sku(&self) -> bool {
        self.load_balancer_sku.eq_ignore_ascii_case("standard")
    }

    /// The credential selected, in upstream order: workload identity > managed identity > secret > certificate.
    pub fn credential_kind(&self) -> CredentialKind {
        if self.use_federated_workload_identity_extension || !self.aad_federated_token_file.is_empty() {
            CredentialKind::WorkloadIdentity
        } else if self.use_managed_identity_extension {
            CredentialKind::ManagedIdentity
        } else if !self.aad_client_id.is_empty() && !self.aad_client_secret.is_empty() {
            CredentialKind::ClientSecret
        } else if !self.aad_client_id.is_empty() && !self.aad_client_cert_path.is_empty() {
            CredentialKind::ClientCertificate
        } else {
            CredentialKind::None
        }
    }

    /// The effective rate limit of a client (key as in `loadBalancerRateLimit`), inheriting unset fields
    /// from the top-level `cloudProviderRateLimit*` keys.
    pub fn rate_limit_for(&self, client_key: &str) -> EffectiveRateLimit {
        let top = &self.rate_limit;
        let own = self.client_rate_limits.get(client_key);
        let pick_f = |f: fn(&RateLimitConfig) -> Option<f64>, d: f64| own.and_then(f).or(f(top)).unwrap_or(d);
        let pick_i = |f: fn(&RateLimitConfig) -> Option<i64>, d: i64| own.and_then(f).or(f(top)).unwrap_or(d);
        let enabled = own.and_then(|r| r.enabled).or(top.enabled).unwrap_or(false);
        let qps = pick_f(|r| r.qps, 1.0);
        let bucket = pick_i(|r| r.bucket, 5);
        EffectiveRateLimit {
            enabled,
            qps,
            bucket: u32::try_from(bucket).unwrap_or(1).max(1),
            qps_write: pick_f(|r| r.qps_write, qps),
            bucket_write: u32::try_from(pick_i(|r| r.bucket_write, bucket)).unwrap_or(1).max(1),
        }
    }

    /// Tags to put on LBs, PIPs, NSGs and route tables: `tags` merged with `tagsMap` as upstream.
    pub fn merged_tags(&self) -> BTreeMap<String, String> {
        parse_tags(&self.tags, &self.tags_map).0
    }

    /// The effective configuration as canonical-key JSON, secrets redacted.
    pub fn to_redacted_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The largest config accepted (a Kubernetes Secret holds at most 1 MiB; real azure.json files are a few KiB).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The deepest nesting accepted in a config document (azure.json nests at most three levels).
pub const MAX_CONFIG_DEPTH: usize = 32;

/// Parses JSON (text starting with `{`) or YAML into a document. Size and depth are bounded before and
/// while parsing, so a hostile document (from a file or a Secret) is refused quickly.
fn parse_document(text: &str) -> Result<Value, ConfigError> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            bytes: text.len(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    if text.trim_start().starts_with('{') {
        // serde_json refuses nesting beyond 128 levels itself, in linear time.
        serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "JSON",
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    } else {
        let mut budget = serde_saphyr::Budget::default();
        budget.max_depth = MAX_CONFIG_DEPTH;
        budget.flow_nesting_limit = MAX_CONFIG_DEPTH;
        budget.max_nodes = 100_000;
        budget.max_aliases = 1_000;
        budget.max_anchors = 1_000;
        budget.max_documents = 1;
        let mut options = serde_saphyr::Options::default();
        options.budget = Some(budget);
        serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| {
                    (
                        usize::try_from(l.line()).unwrap_or(0),
                        usize::try_from(l.column()).unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            ConfigError::Syntax {
                format: "YAML",
                line,
                column,
                message: first_line(&e.to_string()),
            }
        })
    }
}

/// The first line of a (possibly multi-line, snippet-decorated) parser message.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// Renames keys to their canonical spelling (case-insensitive), trims string values, drops and
/// reports unknown keys.
fn normalise_keys(doc: Value, report: &mut ParseReport) -> Result<Value, ConfigError> {
    let Value::Object(map) = doc else {
        return match doc {
            Value::Null => Ok(Value::Object(Map::new())),
            _ => Err(ConfigError::NotAnObject),
        };
    };
    let canonical = CloudConfig::keys();
    let nested: Vec<String> = match serde_json::to_value(RateLimitConfig::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let mut out = Map::new();
    for (k, v) in map {
        let Some(name) = canonical.iter().find(|c| c.eq_ignore_ascii_case(k.trim())) else {
            report.unknown_keys.push(k);
            continue;
        };
        let v = match v {
            Value::String(s) => Value::String(s.trim().to_string()),
            Value::Object(inner) if ClientRateLimits::KEYS.contains(&name.as_str()) => {
                let mut m = Map::new();
                for (ik, iv) in inner {
                    match nested.iter().find(|c| c.eq_ignore_ascii_case(ik.trim())) {
                        Some(n) => {
                            m.insert(n.clone(), iv);
                        }
                        None => report.unknown_keys.push(format!("{name}.{ik}")),
                    }
                }
                Value::Object(m)
            }
            other => other,
        };
        out.insert(name.clone(), v);
    }
    Ok(Value::Object(out))
}

/// Deserialises, naming the key on a type error.
fn deserialize_named<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Type {
            message: redact_value_in_message(&key, e.into_inner().to_string()),
            key,
        }
    })
}

/// The kind of a JSON value, for type errors that never echo the value.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The rate-limit keys are flattened into the config (and nested per client), where serde loses the key
/// name: check their types first so an error names the key (and never echoes the value).
fn check_rate_limit_types(doc: &Map<String, Value>) -> Result<(), ConfigError> {
    let check = |prefix: Option<&str>, m: &Map<String, Value>| -> Result<(), ConfigError> {
        for (key, v) in m {
            let expected = match key.as_str() {
                "cloudProviderRateLimit" => v.is_boolean().then_some(()).ok_or("a boolean"),
                "cloudProviderRateLimitQPS" | "cloudProviderRateLimitQPSWrite" => {
                    v.is_number().then_some(()).ok_or("a number")
                }
                "cloudProviderRateLimitBucket" | "cloudProviderRateLimitBucketWrite" => {
                    (v.is_i64() || v.is_u64()).then_some(()).ok_or("an integer")
                }
                _ => continue,
            };
            if let Err(want) = expected {
                if v.is_null() {
                    continue;
                }
                return Err(ConfigError::Type {
                    key: prefix.map_or_else(|| key.clone(), |p| format!("{p}.{key}")),
                    message: format!("expected {want}, found {}", kind_of(v)),
                });
            }
        }
        Ok(())
    };
    check(None, doc)?;
    for client in ClientRateLimits::KEYS {
        match doc.get(*client) {
            Some(Value::Object(inner)) => check(Some(client), inner)?,
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(ConfigError::Type {
                    key: client.to_string(),
                    message: format!(
                        "expected a mapping of cloudProviderRateLimit* keys, found {}",
                        kind_of(other)
                    ),
                })
            }
        }
    }
    Ok(())
}

/// serde's messages quote the offending value (`invalid type: string "abc", expected i64`): keep the kind,
/// drop the value, so a misplaced secret is never printed.
fn redact_value_in_message(key: &str, msg: String) -> String {
    if SECRET_KEYS.iter().any(|s| key.starts_with(s)) {
        return "has a value of the wrong type (expected a string)".into();
    }
    static QUOTED: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    let re = QUOTED.get_or_init(|| {
        regex::Regex::new(
            r#"(string|integer|floating point|boolean|character|unit variant|variant) ("(?:[^"\\]|\\.)*"|`[^`]*`)"#,
        )
        .ok()
    });
    match re {
        Some(re) => re.replace_all(&msg, "$1").into_owned(),
        None => msg,
    }
}

#[cfg(test)]
mod tests;
