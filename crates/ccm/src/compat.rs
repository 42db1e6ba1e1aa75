//! Upstream flags that are accepted so a manifest written for upstream's cloud-controller-manager starts
//! unchanged (never exit 2 on a flag upstream accepts). Each one set is either honoured (named below) or
//! reported once at start as a warning saying why it has no effect here.

use clap::Args;

/// A bool flag as upstream takes it: `--flag`, `--flag=true|false`.
macro_rules! compat_flags {
    ($( $(#[$doc:meta])* $field:ident = $name:literal, $kind:ident, $why:literal; )*) => {
        /// Upstream flags kept for compatibility.
        #[derive(Debug, Default, Clone, Args)]
        pub struct CompatFlags {
            $(
                $(#[$doc])*
                #[arg(long = $name, hide = true, num_args = compat_flags!(@num $kind), default_missing_value = "true")]
                pub $field: Option<String>,
            )*
        }

        impl CompatFlags {
            /// Every flag: (name, value if set, why it has no effect).
            pub fn all(&self) -> Vec<(&'static str, Option<&str>, &'static str)> {
                vec![$( ($name, self.$field.as_deref(), $why), )*]
            }
        }
    };
    (@num bool) => { 0..=1 };
    (@num value) => { 1 };
}

compat_flags! {
    /// Where upstream writes its self-signed serving certificate; ours lives in memory.
    cert_dir = "cert-dir", value, "the self-signed serving certificate is kept in memory (use --tls-cert-file to provide one)";
    /// Upstream's mutex contention profiling.
    contention_profiling = "contention-profiling", bool, "profiling endpoints are not served";
    /// Upstream's /debug/pprof.
    profiling = "profiling", bool, "profiling endpoints are not served";
    /// Upstream waits this long between starting controllers.
    controller_start_interval = "controller-start-interval", value, "controllers start together";
    /// Upstream re-reads azure.json when it changes.
    enable_dynamic_reloading = "enable-dynamic-reloading", bool, "the cloud config is read at start; restart the pod to apply a change";
    /// HTTP/2 streams per connection of the serving endpoints.
    http2_max_streams_per_connection = "http2-max-streams-per-connection", value, "the endpoints serve HTTP/1.1";
    /// Client-side rate limit of Kubernetes API requests.
    kube_api_qps = "kube-api-qps", value, "Kubernetes API requests are bounded by --kube-api-concurrency instead";
    /// Client-side burst of Kubernetes API requests.
    kube_api_burst = "kube-api-burst", value, "Kubernetes API requests are bounded by --kube-api-concurrency instead";
    /// Content type of Kubernetes API requests.
    kube_api_content_type = "kube-api-content-type", value, "requests are sent as JSON";
    /// The minimum informer resync period.
    min_resync_period = "min-resync-period", value, "watches are not resynced periodically (they resume from their resourceVersion)";
    /// Upstream runs each controller with its own service account.
    use_service_account_credentials = "use-service-account-credentials", bool, "every controller uses the manager's credentials";
    /// Kubernetes feature gates.
    feature_gates = "feature-gates", value, "no feature gate changes what this manager does";
    /// How often logs are flushed.
    log_flush_frequency = "log-flush-frequency", value, "logs are written unbuffered";
    /// Per-module log verbosity.
    vmodule = "vmodule", value, "use RUST_LOG for per-module levels";
    /// JSON log buffering.
    log_json_info_buffer_size = "log-json-info-buffer-size", value, "logs are written unbuffered";
    /// JSON log stream splitting.
    log_json_split_stream = "log-json-split-stream", bool, "all logs go to stderr";
    /// Text log buffering.
    log_text_info_buffer_size = "log-text-info-buffer-size", value, "logs are written unbuffered";
    /// Text log stream splitting.
    log_text_split_stream = "log-text-split-stream", bool, "all logs go to stderr";
    /// Concurrent node initialisations.
    concurrent_node_syncs = "concurrent-node-syncs", value, "nodes are initialised from shared cached lists, one ARM list per scale set whatever the concurrency";
    /// Concurrent node status updates.
    concurrent_node_status_updates = "concurrent-node-status-updates", value, "node addresses are refreshed in one pass";
    /// The in-tree volume plugin of external clouds.
    external_cloud_volume_plugin = "external-cloud-volume-plugin", value, "volumes are handled by CSI drivers";
    /// Upstream's admission webhooks of the CCM.
    webhooks = "webhooks", value, "no webhooks are served";
    /// TLS cipher suites of the serving endpoints.
    tls_cipher_suites = "tls-cipher-suites", value, "rustls' safe default suites are used";
    /// Minimum TLS version of the serving endpoints.
    tls_min_version = "tls-min-version", value, "TLS 1.2 and 1.3 are served (rustls' safe defaults)";
    /// SNI certificates of the serving endpoints.
    tls_sni_cert_key = "tls-sni-cert-key", value, "one certificate is served (--tls-cert-file)";
    /// SO_REUSEADDR on the serving sockets.
    permit_address_sharing = "permit-address-sharing", bool, "sockets are bound without address sharing";
    /// SO_REUSEPORT on the serving sockets.
    permit_port_sharing = "permit-port-sharing", bool, "sockets are bound without port sharing";
    /// Request-header authentication (front proxy).
    requestheader_client_ca_file = "requestheader-client-ca-file", value, "front-proxy (request-header) authentication is not implemented; bearer tokens are";
    /// Request-header authentication (front proxy).
    requestheader_allowed_names = "requestheader-allowed-names", value, "front-proxy (request-header) authentication is not implemented";
    /// Request-header authentication (front proxy).
    requestheader_extra_headers_prefix = "requestheader-extra-headers-prefix", value, "front-proxy (request-header) authentication is not implemented";
    /// Request-header authentication (front proxy).
    requestheader_group_headers = "requestheader-group-headers", value, "front-proxy (request-header) authentication is not implemented";
    /// Request-header authentication (front proxy).
    requestheader_username_headers = "requestheader-username-headers", value, "front-proxy (request-header) authentication is not implemented";
    /// Groups always allowed by authorization.
    authorization_always_allow_groups = "authorization-always-allow-groups", value, "every caller of a protected path is authorized by a SubjectAccessReview";
}

impl CompatFlags {
    /// One warning per flag set that has no effect here.
    pub fn warnings(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|(name, value, why)| {
                value.map(|v| format!("--{name}={v} is accepted but has no effect: {why}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flags_are_warned_by_name() {
        let f = CompatFlags {
            kube_api_qps: Some("20".into()),
            profiling: Some("true".into()),
            ..Default::default()
        };
        let w = f.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w
            .iter()
            .any(|x| x.starts_with("--kube-api-qps=20 is accepted but has no effect")));
        assert!(CompatFlags::default().warnings().is_empty());
    }
}
