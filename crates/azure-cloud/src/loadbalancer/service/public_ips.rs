//! Public IPs of Services: one cached list per resource group, managed PIPs created or updated only when
//! missing or different, user PIPs by name or address, and release (unbind, delete when unused and ours).

use super::*;

impl LoadBalancerApplier {
    pub(super) async fn pip_map(&self, rg: &str) -> Result<Arc<PipMap>, CloudError> {
        let client = self.clients.public_ips.clone();
        let rg_owned = rg.to_string();
        self.pips
            .get(&lower(rg), ReadMode::Default, || async move {
                // A resource group that does not exist holds no public IP (ARM: 404 ResourceGroupNotFound);
                // deleting a Service that names one must complete.
                let list = match client.list(&rg_owned).await {
                    Err(e) if e.is_not_found() => Vec::new(),
                    other => other?,
                };
                Ok(Mutex::new(
                    list.iter()
                        .filter_map(|p| Some((lower(p.resource.name.as_deref()?), Arc::new(to_value(p)))))
                        .collect(),
                ))
            })
            .await
            .map_err(arm)
    }

    pub(super) fn pip_set(map: &PipMap, name: &str, v: Option<Value>) {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        match v {
            Some(v) => {
                m.insert(lower(name), Arc::new(v));
            }
            None => {
                m.remove(&lower(name));
            }
        }
    }

    pub(super) fn pip_get(map: &PipMap, name: &str) -> Option<Arc<Value>> {
        map.lock().unwrap_or_else(|p| p.into_inner()).get(&lower(name)).cloned()
    }

    // ---------------------------------------------------------------- public IPs

    /// Creates or updates a managed PIP (one PUT only when missing or different); returns (id, address).
    pub(super) async fn ensure_managed_pip(
        &self,
        p: &PlannedPublicIp,
        key: &str,
    ) -> Result<(String, String), CloudError> {
        let map = self.pip_map(&p.resource_group).await?;
        let current = Self::pip_get(&map, &p.name);
        let mut body = match &current {
            Some(cur) => (**cur).clone(),
            None => {
                let mut b = json!({
                    "location": self.cfg.location,
                    "sku": {"name": p.sku},
                    "properties": {
                        "publicIPAllocationMethod": "Static",
                        "publicIPAddressVersion": p.version,
                    },
                });
                if !p.zones.is_empty() {
                    b["zones"] = json!(p.zones);
                }
                if let Some(prefix) = &p.prefix_id {
                    b["properties"]["publicIPPrefix"] = json!({"id": prefix});
                }
                b
            }
        };
        // IP tags: set on a new public IP; on an existing one only FirstPartyUsage tags may change, in place,
        // and only with enableIPTagMutationForExistingPublicIP (as upstream); anything else is an error.
        let mut ip_tags_changed = false;
        if let Some(want) = &p.ip_tags {
            let have = ip_tags_of(&body);
            if !same_ip_tags(&have, want) {
                let only_first_party = have
                    .iter()
                    .chain(want.iter())
                    .filter(|t| !have.contains(t) || !want.contains(t))
                    .all(|(t, _)| t.eq_ignore_ascii_case("FirstPartyUsage"));
                if current.is_some() && !(self.cfg.enable_ip_tag_mutation_for_existing_public_ip && only_first_party) {
                    return Err(CloudError::InvalidInput(format!(
                        "service {key}: public IP {} has IP tags {have:?} but {}azure-pip-ip-tags asks for {want:?}; IP tags of an existing public IP cannot change{} (use a new public IP, or restore the annotation)",
                        p.name,
                        annotations::PREFIX,
                        if only_first_party { " unless enableIPTagMutationForExistingPublicIP is true" } else { " except FirstPartyUsage ones" }
                    )));
                }
                body["properties"]["ipTags"] = json!(want
                    .iter()
                    .map(|(t, tag)| json!({"ipTagType": t, "tag": tag}))
                    .collect::<Vec<_>>());
                ip_tags_changed = true;
            }
        }
        // Tags: ours win, the service binding is merged with services already bound.
        let mut tags = tags_of(&body);
        let before = tags.clone();
        for (k, v) in &p.tags {
            if k != crate::loadbalancer::frontend::SERVICE_TAG {
                tags.insert(k.clone(), v.clone());
            }
        }
        if let Some(t) = rebind(&tags, key, true) {
            tags = t;
        }
        // systemTags: tags that are neither wanted, system nor ours go (upstream's reconcileTags).
        if let Some(t) = self.cfg.reconciled_tags(&tags, |k| {
            is_our_tag(k) || p.tags.keys().any(|w| w.eq_ignore_ascii_case(k))
        }) {
            tags = t;
        }
        let mut changed = current.is_none() || tags != before || ip_tags_changed;
        body["tags"] = json!(tags);
        let dns_now = body
            .pointer("/properties/dnsSettings/domainNameLabel")
            .and_then(Value::as_str)
            .map(str::to_string);
        match p.dns_label.as_deref() {
            Some("") | None if dns_now.is_some() && p.dns_label.is_some() => {
                if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
                    props.remove("dnsSettings");
                }
                changed = true;
            }
            Some(label) if !label.is_empty() && dns_now.as_deref() != Some(label) => {
                body["properties"]["dnsSettings"] = json!({"domainNameLabel": label});
                changed = true;
            }
            _ => {}
        }
        if !changed {
            return Self::pip_address(&body, &p.name);
        }
        if let Some(props) = body.get_mut("properties").and_then(Value::as_object_mut) {
            props.remove("provisioningState");
            props.remove("ipConfiguration");
            props.remove("resourceGuid");
        }
        let model = from_value(body, "public IP")?;
        let written = self
            .clients
            .public_ips
            .create_or_update(&p.resource_group, &p.name, &model)
            .await
            .map_err(|e| {
                // Our copy may be stale (412) or wrong: reload the list next time.
                self.pips.invalidate(&lower(&p.resource_group));
                arm(e)
            })?;
        let v = to_value(&written);
        tracing::info!(service = key, public_ip = %p.name, created = current.is_none(), "public IP ensured");
        Self::pip_set(&map, &p.name, Some(v.clone()));
        Self::pip_address(&v, &p.name)
    }

    pub(super) fn pip_address(v: &Value, name: &str) -> Result<(String, String), CloudError> {
        let id = v.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        match v.pointer("/properties/ipAddress").and_then(Value::as_str) {
            Some(ip) if !ip.is_empty() => Ok((id, ip.to_string())),
            _ => Err(CloudError::Azure(format!(
                "public IP {name} has no address yet; it will be read again on the next sync"
            ))),
        }
    }

    pub(super) async fn existing_pip(&self, src: &PublicIpSource) -> Result<(String, String), CloudError> {
        match src {
            PublicIpSource::Named { name, resource_group } => {
                let map = self.pip_map(resource_group).await?;
                let found = match Self::pip_get(&map, name) {
                    Some(v) => Some(v),
                    // Maybe created after our list: one GET.
                    None => match self.clients.public_ips.get(resource_group, name).await {
                        Ok(p) => {
                            let v = to_value(&p);
                            Self::pip_set(&map, name, Some(v.clone()));
                            Some(Arc::new(v))
                        }
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(arm(e)),
                    },
                };
                let v = found.ok_or_else(|| {
                    CloudError::InvalidInput(format!(
                        "public IP {name} named by annotation {}azure-pip-name was not found in resource group {resource_group}",
                        annotations::PREFIX
                    ))
                })?;
                Self::pip_address(&v, name)
            }
            PublicIpSource::ByAddress {
                address,
                resource_group,
            } => {
                let find = |map: &PipMap| {
                    map.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .values()
                        .find(|v| v.pointer("/properties/ipAddress").and_then(Value::as_str) == Some(address.as_str()))
                        .cloned()
                };
                let mut found = find(&*self.pip_map(resource_group).await?);
                if found.is_none() {
                    self.pips.invalidate(&lower(resource_group));
                    found = find(&*self.pip_map(resource_group).await?);
                }
                let v = found.ok_or_else(|| {
                    CloudError::InvalidInput(format!(
                        "user supplied IP Address {address} was not found in resource group {resource_group}"
                    ))
                })?;
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                Self::pip_address(&v, &name)
            }
            PublicIpSource::Managed(_) => Err(CloudError::Azure("internal: managed PIP passed as existing".into())),
        }
    }

    /// Unbinds the service from managed PIPs it no longer uses; deletes those no other service uses.
    /// PIPs without our cluster tag or the service binding are never touched.
    pub(super) async fn release_pips(
        &self,
        key: &str,
        cluster: &str,
        keep: &BTreeSet<String>,
        rgs: &[String],
    ) -> Result<(), CloudError> {
        for rg in rgs {
            let map = self.pip_map(rg).await?;
            let candidates: Vec<Arc<Value>> = map
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter(|v| {
                    let tags = tags_of(v);
                    let ours = tags.get(CLUSTER_TAG).is_none_or(|c| c.eq_ignore_ascii_case(cluster));
                    let id = lower(v.get("id").and_then(Value::as_str).unwrap_or_default());
                    ours && bound_services(&tags).iter().any(|s| s == key) && !keep.contains(&id)
                })
                .cloned()
                .collect();
            for v in candidates {
                let name = v.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let tags = tags_of(&v);
                let Some(remaining) = rebind(&tags, key, false) else {
                    continue;
                };
                if bound_services(&remaining).is_empty() {
                    match self.clients.public_ips.delete(rg, &name).await {
                        Ok(()) => {
                            tracing::info!(service = key, public_ip = %name, "public IP deleted");
                            Self::pip_set(&map, &name, None);
                        }
                        Err(e) => {
                            self.pips.invalidate(&lower(rg));
                            return Err(arm(e));
                        }
                    }
                } else {
                    let mut body = (*v).clone();
                    body["tags"] = json!(remaining);
                    let model = from_value(body, "public IP")?;
                    let w = self
                        .clients
                        .public_ips
                        .create_or_update(rg, &name, &model)
                        .await
                        .map_err(arm)?;
                    Self::pip_set(&map, &name, Some(to_value(&w)));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn resolve_frontends(
        &self,
        cluster: &str,
        spec: &ServiceLbSpec,
        base: &str,
        key: &str,
    ) -> Result<Frontends, CloudError> {
        let config_tags = self.cfg.merged_tags();
        let vnet_rg = if self.cfg.vnet_resource_group.is_empty() {
            self.cfg.resource_group.clone()
        } else {
            self.cfg.vnet_resource_group.clone()
        };
        if spec.internal && spec.internal_subnet.is_none() && self.cfg.subnet_name.is_empty() {
            return Err(CloudError::InvalidInput(format!(
                "service {key} is internal but neither annotation {}azure-load-balancer-internal-subnet nor subnetName in the cloud config names a subnet",
                annotations::PREFIX
            )));
        }
        let region_zones = self.region_zones().await?;
        let ctx = FrontendContext {
            cluster,
            base,
            service_key: key,
            subscription: self.network_subscription(),
            resource_group: &self.cfg.resource_group,
            vnet_resource_group: &vnet_rg,
            vnet: &self.cfg.vnet_name,
            subnet: &self.cfg.subnet_name,
            standard_sku: self.standard(),
            region_zones,
            config_tags: &config_tags,
        };
        let mut out = Frontends {
            wishes: Vec::new(),
            public: Vec::new(),
            used_pips: BTreeSet::new(),
        };
        for f in plan_frontends(spec, &ctx) {
            let mut wish = FrontendWish {
                name: f.name.clone(),
                family: f.family,
                public_ip_id: None,
                subnet_id: None,
                private_ip: None,
                zones: f.zones.clone(),
            };
            match &f.kind {
                FrontendKind::Private { subnet_id, address } => {
                    wish.subnet_id = Some(subnet_id.clone());
                    wish.private_ip = address.clone();
                }
                FrontendKind::Public(src) => {
                    let (id, ip) = match src {
                        PublicIpSource::Managed(p) => self.ensure_managed_pip(p, key).await?,
                        other => self.existing_pip(other).await?,
                    };
                    out.used_pips.insert(lower(&id));
                    out.public.push((f.family, ip));
                    wish.public_ip_id = Some(id);
                }
            }
            out.wishes.push(wish);
        }
        Ok(out)
    }

    pub(super) fn pip_groups(&self, spec: Option<&ServiceLbSpec>) -> Vec<String> {
        let mut rgs = vec![self.cfg.resource_group.clone()];
        if let Some(rg) = spec.and_then(|s| s.pip_resource_group.clone()) {
            if !rgs.iter().any(|r| r.eq_ignore_ascii_case(&rg)) {
                rgs.push(rg);
            }
        }
        rgs
    }
}

/// A public IP's IP tags as (type, tag) pairs.
fn ip_tags_of(pip: &Value) -> Vec<(String, String)> {
    pip.pointer("/properties/ipTags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t.get("ipTagType")?.as_str()?.to_string(),
                t.get("tag")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// The same IP tags in any order (types compared ignoring case).
fn same_ip_tags(a: &[(String, String)], b: &[(String, String)]) -> bool {
    let norm = |v: &[(String, String)]| {
        let mut x: Vec<(String, String)> = v.iter().map(|(t, g)| (t.to_ascii_lowercase(), g.clone())).collect();
        x.sort();
        x
    };
    norm(a) == norm(b)
}
