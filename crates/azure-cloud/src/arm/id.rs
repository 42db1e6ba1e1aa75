//! Typed ARM resource ids and Kubernetes provider ids.
//!
//! `/subscriptions/<sub>/resourceGroups/<rg>/providers/<Namespace>/<type>/<name>[/<type>/<name>...]`.
//! Provider namespace and type segments compare case-insensitively, and so does the resource group.

use std::fmt;

/// The prefix of Azure provider ids.
pub const PROVIDER_ID_PREFIX: &str = "azure://";

/// A parsed ARM resource id.
#[derive(Debug, Clone)]
pub struct ResourceId {
    /// Subscription id.
    pub subscription: String,
    /// Resource group, as written.
    pub resource_group: String,
    /// Provider namespace, e.g. `Microsoft.Network`.
    pub provider: String,
    /// (type, name) pairs: `[("loadBalancers", "lb"), ("frontendIPConfigurations", "fe")]`.
    pub segments: Vec<(String, String)>,
}

/// Why an id could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ARM resource id {id:?}: {reason}")]
pub struct IdError {
    /// The input.
    pub id: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl ResourceId {
    /// Builds an id.
    pub fn new(subscription: &str, resource_group: &str, provider: &str, segments: &[(&str, &str)]) -> Self {
        Self {
            subscription: subscription.into(),
            resource_group: resource_group.into(),
            provider: provider.into(),
            segments: segments.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect(),
        }
    }

    /// Parses an id (leading `/` optional; trailing `/` ignored).
    pub fn parse(id: &str) -> Result<Self, IdError> {
        let err = |reason| IdError {
            id: id.to_string(),
            reason,
        };
        let parts: Vec<&str> = id.trim().trim_matches('/').split('/').collect();
        if parts.len() < 2 || !parts[0].eq_ignore_ascii_case("subscriptions") || parts[1].is_empty() {
            return Err(err("must start with /subscriptions/<id>"));
        }
        if parts.len() < 4 || !parts[2].eq_ignore_ascii_case("resourceGroups") || parts[3].is_empty() {
            return Err(err("missing /resourceGroups/<name>"));
        }
        if parts.len() < 7 || !parts[4].eq_ignore_ascii_case("providers") || parts[5].is_empty() {
            return Err(err("missing /providers/<namespace>/<type>/<name>"));
        }
        let rest = &parts[6..];
        if rest.len() % 2 != 0 {
            return Err(err("a resource type has no name"));
        }
        if rest.iter().any(|s| s.is_empty()) {
            return Err(err("empty segment"));
        }
        Ok(Self {
            subscription: parts[1].to_string(),
            resource_group: parts[3].to_string(),
            provider: parts[5].to_string(),
            segments: rest.chunks(2).map(|c| (c[0].to_string(), c[1].to_string())).collect(),
        })
    }

    /// The name of the last segment.
    pub fn name(&self) -> &str {
        self.segments.last().map(|(_, n)| n.as_str()).unwrap_or_default()
    }

    /// The name of the segment of a type (case-insensitive), e.g. `virtualMachineScaleSets`.
    pub fn name_of(&self, type_: &str) -> Option<&str> {
        self.segments
            .iter()
            .find(|(t, _)| t.eq_ignore_ascii_case(type_))
            .map(|(_, n)| n.as_str())
    }

    /// The type path, e.g. `Microsoft.Network/loadBalancers/frontendIPConfigurations`.
    pub fn resource_type(&self) -> String {
        let mut s = self.provider.clone();
        for (t, _) in &self.segments {
            s.push('/');
            s.push_str(t);
        }
        s
    }

    /// The id of the top-level resource (first segment only).
    pub fn top_level(&self) -> Self {
        Self {
            segments: self.segments.iter().take(1).cloned().collect(),
            ..self.clone()
        }
    }

    /// Same id with the resource group lower-cased (as upstream's provider ids).
    pub fn with_lowercase_resource_group(&self) -> Self {
        Self {
            resource_group: self.resource_group.to_lowercase(),
            ..self.clone()
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/{}",
            self.subscription, self.resource_group, self.provider
        )?;
        for (t, n) in &self.segments {
            write!(f, "/{t}/{n}")?;
        }
        Ok(())
    }
}

impl PartialEq for ResourceId {
    fn eq(&self, o: &Self) -> bool {
        self.subscription.eq_ignore_ascii_case(&o.subscription)
            && self.resource_group.eq_ignore_ascii_case(&o.resource_group)
            && self.provider.eq_ignore_ascii_case(&o.provider)
            && self.segments.len() == o.segments.len()
            && self
                .segments
                .iter()
                .zip(&o.segments)
                .all(|((t1, n1), (t2, n2))| t1.eq_ignore_ascii_case(t2) && n1 == n2)
    }
}

impl Eq for ResourceId {}

/// Compares two id strings as ARM does (namespace, types, subscription and group case-insensitive).
pub fn same_resource(a: &str, b: &str) -> bool {
    match (ResourceId::parse(a), ResourceId::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.eq_ignore_ascii_case(b),
    }
}

/// `azure://` + the id with the resource group lower-cased (upstream `GetInstanceProviderID`).
pub fn provider_id_for(id: &ResourceId) -> String {
    format!("{PROVIDER_ID_PREFIX}{}", id.with_lowercase_resource_group())
}

/// The ARM id inside a provider id: strips `azure://` (upstream accepts the id without the scheme too).
pub fn resource_id_from_provider_id(provider_id: &str) -> &str {
    provider_id.strip_prefix(PROVIDER_ID_PREFIX).unwrap_or(provider_id)
}

/// Upstream's managed check: `^azure:///subscriptions/.*/resourceGroups/.*/providers/Microsoft.Compute/.*`
/// (case-sensitive, as upstream). Nodes whose provider id fails it are "unmanaged".
pub fn is_managed_provider_id(provider_id: &str) -> bool {
    let Some(rest) = provider_id.strip_prefix("azure:///subscriptions/") else {
        return false;
    };
    match rest.find("/resourceGroups/") {
        Some(i) => rest[i + "/resourceGroups/".len()..].contains("/providers/Microsoft.Compute/"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_table() {
        let ok = [
            (
                "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/loadBalancers/lb",
                "Microsoft.Network/loadBalancers",
                "lb",
            ),
            (
                "subscriptions/s/resourcegroups/rg/providers/microsoft.network/loadBalancers/lb/frontendIPConfigurations/fe/",
                "microsoft.network/loadBalancers/frontendIPConfigurations",
                "fe",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3",
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
                "3",
            ),
        ];
        for (s, ty, name) in ok {
            let id = ResourceId::parse(s).unwrap();
            assert_eq!(id.resource_type(), ty);
            assert_eq!(id.name(), name);
            assert_eq!(ResourceId::parse(&id.to_string()).unwrap(), id);
        }
        let bad = [
            ("", "must start with /subscriptions/<id>"),
            ("/subscriptions/", "must start with /subscriptions/<id>"),
            (
                "/subscriptions/s/providers/Microsoft.Network/x/y",
                "missing /resourceGroups/<name>",
            ),
            (
                "/subscriptions/s/resourceGroups/rg",
                "missing /providers/<namespace>/<type>/<name>",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network",
                "missing /providers/<namespace>/<type>/<name>",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers",
                "a resource type has no name",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb/probes",
                "a resource type has no name",
            ),
            (
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers//x/y",
                "empty segment",
            ),
        ];
        for (s, reason) in bad {
            assert_eq!(ResourceId::parse(s).unwrap_err().reason, reason, "{s}");
        }
    }

    #[test]
    fn comparisons() {
        assert!(same_resource(
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/LOADBALANCERS/lb",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/loadBalancers/lb"
        ));
        assert!(!same_resource(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/LB",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb"
        ));
        let id = ResourceId::parse("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/3").unwrap();
        assert_eq!(id.name_of("VirtualMachineScaleSets"), Some("ss"));
        assert_eq!(id.top_level().name(), "ss");
    }

    #[test]
    fn provider_ids() {
        let id =
            ResourceId::parse("/subscriptions/s/resourceGroups/MyRG/providers/Microsoft.Compute/virtualMachines/vm-0")
                .unwrap();
        let pid = provider_id_for(&id);
        assert_eq!(
            pid,
            "azure:///subscriptions/s/resourceGroups/myrg/providers/Microsoft.Compute/virtualMachines/vm-0"
        );
        assert!(is_managed_provider_id(&pid));
        assert_eq!(ResourceId::parse(resource_id_from_provider_id(&pid)).unwrap(), id);
        for unmanaged in [
            "",
            "kind://node-1",
            "azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/x/y",
            "azure://subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v",
        ] {
            assert!(!is_managed_provider_id(unmanaged), "{unmanaged}");
        }
    }
}
