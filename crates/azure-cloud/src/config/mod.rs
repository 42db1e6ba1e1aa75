//! azure.json: parsing (JSON or YAML, keys case-insensitive), defaults, validation and cloud environments.
//!
//! The struct [`CloudConfig`] is the single source of truth for the accepted keys: its serialised field
//! names are the canonical key names, used for case-insensitive matching, for the effective
//! configuration that `--check-config` prints, and checked against `docs/configuration.md` by a test.

mod cloud;
mod parse;
mod settings;
mod sources;
mod tags;
mod validate;

pub use cloud::{CloudEnvironment, EnvironmentError, KnownCloud, ENVIRONMENT_FILEPATH_ENV};
use parse::{check_rate_limit_types, deserialize_named, normalise_keys, parse_document};
pub use parse::{MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH};
pub use settings::{BackendPoolType, LbSku, PreconfiguredPools, ProbeMode, VmType};
pub use sources::{merge_secret_config, CloudConfigType};
pub use tags::{parse_system_tags, parse_tags, reconcile_tags};
pub use validate::{
    BACKEND_POOL_TYPES, HEALTH_PROBE_MODES, IDENTITY_SYSTEMS, LB_SKUS, MIN_RATE_LIMIT_QPS, NOT_IMPLEMENTED_VALUES,
    NO_EFFECT_KEYS, PRECONFIGURED_POOL_TYPES, VM_TYPES,
};

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
    /// Change `FirstPartyUsage` IP tags of an existing public IP in place (other IP tag types of an existing
    /// public IP cannot change: a reconciliation error, as upstream).
    #[serde(rename = "enableIPTagMutationForExistingPublicIP")]
    pub enable_ip_tag_mutation_for_existing_public_ip: bool,
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

    /// True when network resources live in another tenant (`networkResourceTenantID` set and different).
    pub fn uses_network_tenant(&self) -> bool {
        !self.network_resource_tenant_id.is_empty()
            && !self.network_resource_tenant_id.eq_ignore_ascii_case(&self.tenant_id)
    }

    /// True for the standard LB SKU.
    pub fn is_standard_sku(&self) -> bool {
        self.sku() == LbSku::Standard
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

    /// A resource's tags reconciled with `tags`/`tagsMap` and `systemTags` (see [`reconcile_tags`]); `keep`
    /// marks keys of ours that are never removed. `None` when nothing changes.
    pub fn reconciled_tags(
        &self,
        current: &BTreeMap<String, String>,
        keep: impl Fn(&str) -> bool,
    ) -> Option<BTreeMap<String, String>> {
        reconcile_tags(
            current,
            &self.merged_tags(),
            &parse_system_tags(&self.system_tags),
            keep,
        )
    }

    /// The effective configuration as canonical-key JSON, secrets redacted.
    pub fn to_redacted_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests;
