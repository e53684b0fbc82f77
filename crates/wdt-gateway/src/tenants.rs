//! Tenants: the ERP accounts one gateway serves, each with its own client (credentials, quota,
//! back-off, circuit breaker), caches, idempotency store and Redis keys.
//!
//! The `default` tenant comes from the single-account settings (`WDT_SID`, …); the others from
//! the tenants file (`file.rs`), which is reloaded on change and on SIGHUP (`reload.rs`). A
//! request's tenant comes from its token's tenant claim and from nothing else
//! ([`Registry::resolve`]). A reload builds the tenants that are new or changed, keeps the
//! unchanged ones (and their caches) as they are, and swaps the whole set at once: requests
//! in flight finish on the tenant they started with; a removed tenant's next request is
//! refused.

pub mod file;
pub(crate) mod reload;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use stock_service::{CacheConfig, EntryTexts, StockService};
use wdt_client::{EnterpriseCredentials, FlagshipCredentials, WdtClient};

pub use file::TenantSpec;

/// The name of the tenant of the single-account settings.
pub const DEFAULT: &str = stock_service::DEFAULT_TENANT;

/// The metrics label of tenants beyond [`Factory`]'s label limit.
pub const OTHER_LABEL: &str = "other";

/// One ERP account served: its name and its stock service.
pub struct Tenant {
    name: Arc<str>,
    service: StockService,
    label: metrics::SharedString,
    fingerprint: u128,
    /// The tenant's change-feed poller, while the feed runs (stops with the tenant).
    feed: Option<crate::feed::Poller>,
    /// The tenant's webhooks and their delivering task (stops with the tenant), unless
    /// webhooks are off.
    webhooks: Option<(wdt_webhooks::Webhooks, wdt_webhooks::Dispatcher)>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// The name tokens carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the tenant's change feed stands, when it runs.
    pub fn feed(&self) -> Option<&crate::feed::FeedStatus> {
        self.feed.as_ref().map(crate::feed::Poller::status)
    }

    /// The tenant's webhooks, unless they are off.
    pub fn webhooks(&self) -> Option<&wdt_webhooks::Webhooks> {
        self.webhooks.as_ref().map(|(w, _)| w)
    }

    /// The tenant's stock use cases.
    pub fn service(&self) -> &StockService {
        &self.service
    }

    /// Its `tenant` label in the metrics (its name, or `other` beyond the label limit).
    pub fn label(&self) -> &metrics::SharedString {
        &self.label
    }
}

/// The tenants served now, by name.
pub type Tenants = BTreeMap<Arc<str>, Arc<Tenant>>;

/// Builds tenants: what their services share (the vendor policy, the cache settings, one
/// connection pool, one Redis connection, one text cache) and the metrics labels given so far.
pub struct Factory {
    feed: Option<crate::feed::FeedConfig>,
    webhooks: Option<WebhookParts>,
    policy: wdt_client::Policy,
    cache: CacheConfig,
    redis: Option<wdt_redis::Shared>,
    /// How long a replica waits for another's load of a shared cache entry.
    wait: Duration,
    texts: EntryTexts,
    /// A client without credentials whose connection pool every tenant's client shares.
    pool: WdtClient,
    labels: Labels,
    /// The Redis namespace of the `default` tenant (that of a single-account gateway, so an
    /// upgraded replica shares state with the others during a rolling upgrade).
    default_namespace: String,
}

impl std::fmt::Debug for Factory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Factory")
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// What a [`Factory`] needs.
#[derive(Debug)]
pub struct FactorySettings {
    /// The guard in front of the vendor (each tenant may change its quota).
    pub policy: wdt_client::Policy,
    /// Cache settings of every tenant.
    pub cache: CacheConfig,
    /// Shared state with other replicas.
    pub redis: Option<wdt_redis::Shared>,
    /// How long a replica waits for another's load.
    pub wait: Duration,
    /// The most distinct `tenant` labels in the metrics.
    pub label_limit: usize,
    /// The Redis namespace of the `default` tenant.
    pub default_namespace: String,
    /// The change feed, unless it is off.
    pub feed: Option<crate::feed::FeedConfig>,
    /// Webhooks, unless they are off.
    pub webhooks: Option<WebhookParts>,
}

/// What every tenant's webhooks share.
#[derive(Debug, Clone)]
pub struct WebhookParts {
    /// How they are delivered.
    pub settings: wdt_webhooks::Settings,
    /// The delivery client.
    pub client: reqwest::Client,
    /// The embedded store, without Redis.
    pub embedded: Option<Arc<wdt_webhooks::Embedded>>,
}

/// The `tenant` labels given out: at most `limit` names, then `other`, so a gateway of many
/// tenants keeps a bounded number of series.
struct Labels {
    limit: usize,
    given: Mutex<HashSet<Arc<str>>>,
}

impl Labels {
    fn of(&self, name: &Arc<str>) -> metrics::SharedString {
        let mut given = self.given.lock().unwrap_or_else(PoisonError::into_inner);
        if given.contains(name) || given.len() < self.limit {
            given.insert(name.clone());
            metrics::SharedString::from(name.clone())
        } else {
            metrics::SharedString::const_str(OTHER_LABEL)
        }
    }
}

/// Bytes of stock entries' JSON text kept for all tenants together.
const ENTRY_TEXT_BYTES: u64 = 8 << 20;

impl Factory {
    /// A factory.
    ///
    /// # Errors
    /// When the HTTP client cannot be created.
    pub fn new(settings: FactorySettings) -> Result<Self, String> {
        let pool = WdtClient::builder()
            .policy(settings.policy.clone())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            // An entry's text lives as long as the entry may (its id changes with its rows).
            texts: EntryTexts::new(
                ENTRY_TEXT_BYTES,
                match settings.feed {
                    Some(_) => settings.cache.stock_ttl.max(settings.cache.fed_stock_ttl),
                    None => settings.cache.stock_ttl,
                },
            ),
            policy: settings.policy,
            cache: settings.cache,
            redis: settings.redis,
            wait: settings.wait,
            pool,
            labels: Labels {
                limit: settings.label_limit,
                given: Mutex::default(),
            },
            default_namespace: settings.default_namespace,
            feed: settings.feed,
            webhooks: settings.webhooks,
        })
    }

    /// The tenant of `spec`, with a new client and new caches.
    ///
    /// # Errors
    /// When its credentials cannot be used (named, never shown).
    pub fn build(&self, spec: &TenantSpec) -> Result<Arc<Tenant>, String> {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let label = self.labels.of(&name);
        let mut policy = self.policy.clone();
        if let Some(n) = spec.vendor_calls_per_minute {
            policy.calls_per_minute = n;
        }
        let mut client = WdtClient::builder()
            .policy(policy)
            .same_pool_as(&self.pool)
            .metrics_tenant(label.clone());
        if let Some(a) = &spec.flagship {
            let creds = FlagshipCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret)
                .map_err(|e| format!("tenant {}: flagship: {e}", spec.name))?;
            client = client.flagship(creds);
        }
        if let Some(a) = &spec.enterprise {
            let creds = EnterpriseCredentials::new(&a.url, &a.sid, &a.appkey, &a.appsecret)
                .map_err(|e| format!("tenant {}: enterprise: {e}", spec.name))?;
            client = client.enterprise(creds);
        }
        // Each tenant's keys live under its own prefix (and Redis Cluster hash slot).
        let redis = self.redis.as_ref().map(|redis| {
            if spec.name == DEFAULT {
                redis.scoped(&self.default_namespace)
            } else {
                redis.scoped(&spec.account_id())
            }
        });
        if let Some(redis) = &redis {
            client = client.shared_quota(redis.clone());
        }
        let client = client
            .build()
            .map_err(|e| format!("tenant {}: {e}", spec.name))?;
        let mut service = StockService::builder(client, &self.cache)
            .tenant(&spec.name)
            .metrics_tenant(label.clone())
            .texts(self.texts.clone());
        if let Some(redis) = redis {
            service = service.redis(redis, self.wait);
        }
        if let Some(feed) = &self.feed {
            service = service.change_feed(feed.interval);
        }
        let service = service.build();
        let account = match spec.name == DEFAULT {
            true => self.default_namespace.clone(),
            false => spec.account_id(),
        };
        let webhooks = match &self.webhooks {
            Some(parts) => {
                let hooks = wdt_webhooks::Webhooks::new(
                    service.clone(),
                    parts.embedded.clone(),
                    &account,
                    label.clone(),
                    parts.settings.clone(),
                    parts.client.clone(),
                )
                .map_err(|e| format!("tenant {}: {e}", spec.name))?;
                let dispatcher = hooks.start();
                Some((hooks, dispatcher))
            }
            None => None,
        };
        let feed = self.feed.as_ref().map(|config| {
            crate::feed::Poller::start(
                service.clone(),
                &account,
                label.clone(),
                config,
                crate::feed::Families {
                    enterprise: spec.enterprise.is_some(),
                    flagship: spec.flagship.is_some(),
                },
                webhooks.as_ref().map(|(w, _)| w.clone()),
            )
        });
        Ok(Arc::new(Tenant {
            name,
            service,
            label,
            fingerprint: spec.fingerprint(),
            feed,
            webhooks,
        }))
    }
}

/// Why a token's tenant is not served: the message of an `UNKNOWN_TENANT` refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTenant(pub String);

/// What a reload changed, by tenant name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// New tenants.
    pub added: Vec<String>,
    /// Tenants whose account, secret or quota changed (new client and caches).
    pub changed: Vec<String>,
    /// Tenants no longer served.
    pub removed: Vec<String>,
    /// Tenants kept as they were, caches and all.
    pub kept: usize,
}

/// The tenants served now, and how to change them.
pub struct Registry {
    current: ArcSwap<Tenants>,
    factory: Factory,
    /// The tenants of the settings rather than the file: `default` of the single-account
    /// settings, if configured (and in demo mode, the emulator's second account).
    fixed: Vec<TenantSpec>,
    /// The tenants file, if configured.
    file: Option<PathBuf>,
    /// One reload at a time.
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tenants", &self.current.load().keys().collect::<Vec<_>>())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// The registry of the `fixed` tenants of the settings (the `default` tenant, when
    /// configured) and the tenants of `file` (when configured), read now.
    ///
    /// # Errors
    /// When the file cannot be read or checked, or a tenant cannot be built.
    pub fn new(
        factory: Factory,
        fixed: Vec<TenantSpec>,
        file: Option<PathBuf>,
    ) -> Result<Self, String> {
        let specs = match &file {
            Some(path) => file::read(path)?,
            None => Vec::new(),
        };
        file::check_with_fixed(&specs, &fixed)?;
        let registry = Self {
            current: ArcSwap::from_pointee(Tenants::new()),
            factory,
            fixed,
            file,
            reloading: Mutex::new(()),
        };
        registry.apply(specs)?;
        Ok(registry)
    }

    /// The tenants served now.
    pub fn tenants(&self) -> Arc<Tenants> {
        self.current.load_full()
    }

    /// The tenant a token's tenant claim names (`None`: the claim is absent, which means
    /// `default`).
    ///
    /// # Errors
    /// [`UnknownTenant`] when that tenant is not served (never was, or was removed).
    pub fn resolve(&self, claim: Option<&str>) -> Result<Arc<Tenant>, UnknownTenant> {
        let current = self.current.load();
        let name = claim.unwrap_or(DEFAULT);
        match current.get(name) {
            Some(tenant) => Ok(tenant.clone()),
            None if claim.is_none() => Err(UnknownTenant(
                "the token names no tenant and this gateway has no default tenant: ask for a token with a tenant claim".into(),
            )),
            None => {
                let shown: String = name.chars().take(file::MAX_NAME).collect();
                Err(UnknownTenant(format!(
                    "the token's tenant {shown:?} is not served by this gateway"
                )))
            }
        }
    }

    /// Reads the tenants file again and applies it; the set served is unchanged when it cannot
    /// be read or checked.
    ///
    /// # Errors
    /// Why the file was refused.
    pub fn reload(&self) -> Result<Changes, String> {
        let Some(path) = &self.file else {
            return Ok(Changes {
                kept: self.current.load().len(),
                ..Changes::default()
            });
        };
        let specs = file::read(path)?;
        file::check_with_fixed(&specs, &self.fixed)?;
        self.apply(specs)
    }

    /// Serves `specs` (and the default tenant): unchanged tenants are kept, new and changed
    /// ones built, and the whole set swapped at once. Nothing changes if any tenant cannot be
    /// built.
    fn apply(&self, specs: Vec<TenantSpec>) -> Result<Changes, String> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current.load_full();
        let mut next = Tenants::new();
        let mut changes = Changes::default();
        for spec in self.fixed.iter().chain(specs.iter()) {
            let tenant = match old.get(spec.name.as_str()) {
                Some(t) if t.fingerprint == spec.fingerprint() => {
                    changes.kept += 1;
                    t.clone()
                }
                Some(_) => {
                    changes.changed.push(spec.name.clone());
                    self.factory.build(spec)?
                }
                None => {
                    changes.added.push(spec.name.clone());
                    self.factory.build(spec)?
                }
            };
            next.insert(tenant.name.clone(), tenant);
        }
        changes.removed = old
            .keys()
            .filter(|name| !next.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
        #[allow(clippy::cast_precision_loss, reason = "tenant counts are small")]
        metrics::gauge!("wdt_tenants").set(next.len() as f64);
        self.current.store(Arc::new(next));
        Ok(changes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn factory(label_limit: usize) -> Factory {
        Factory::new(FactorySettings {
            policy: crate::config::vendor_defaults(),
            cache: CacheConfig::default(),
            redis: None,
            wait: Duration::from_secs(1),
            label_limit,
            default_namespace: "ns".into(),
            feed: None,
            webhooks: None,
        })
        .unwrap()
    }

    fn spec(name: &str, sid: &str, secret: &str) -> TenantSpec {
        TenantSpec {
            name: name.into(),
            flagship: Some(crate::config::Account {
                url: "http://127.0.0.1:9/openapi".into(),
                sid: sid.into(),
                appkey: "k".into(),
                appsecret: secret.to_owned().into(),
            }),
            enterprise: None,
            vendor_calls_per_minute: None,
        }
    }

    #[tokio::test]
    async fn tenants_resolve_by_claim_and_reloads_keep_the_unchanged_ones() {
        let registry = Registry::new(factory(10), vec![spec(DEFAULT, "d", "s:s")], None).unwrap();
        assert_eq!(registry.resolve(None).unwrap().name(), DEFAULT);
        assert_eq!(registry.resolve(Some(DEFAULT)).unwrap().name(), DEFAULT);
        let refused = registry.resolve(Some("acme")).unwrap_err();
        assert!(refused.0.contains("\"acme\" is not served"), "{refused:?}");

        let default = registry.resolve(None).unwrap();
        let changes = registry
            .apply(vec![spec("acme", "a", "s:s"), spec("globex", "g", "s:s")])
            .unwrap();
        assert_eq!(changes.added, ["acme", "globex"]);
        assert_eq!(changes.kept, 1);
        let acme = registry.resolve(Some("acme")).unwrap();
        assert!(
            Arc::ptr_eq(&default, &registry.resolve(None).unwrap()),
            "the default tenant is kept"
        );

        // Rotating acme's secret makes a new acme; globex goes; the rest stays.
        let changes = registry.apply(vec![spec("acme", "a", "t:t")]).unwrap();
        assert_eq!(changes.changed, ["acme"]);
        assert_eq!(changes.removed, ["globex"]);
        assert_eq!(changes.kept, 1);
        assert!(!Arc::ptr_eq(
            &acme,
            &registry.resolve(Some("acme")).unwrap()
        ));
        assert!(registry.resolve(Some("globex")).is_err());
    }

    #[tokio::test]
    async fn without_a_default_a_token_must_name_its_tenant() {
        let registry = Registry::new(factory(10), Vec::new(), None);
        assert!(registry.is_err(), "no tenant at all is refused");
        let registry = Registry {
            current: ArcSwap::from_pointee(Tenants::new()),
            factory: factory(10),
            fixed: Vec::new(),
            file: None,
            reloading: Mutex::new(()),
        };
        registry.apply(vec![spec("acme", "a", "s:s")]).unwrap();
        let refused = registry.resolve(None).unwrap_err();
        assert!(refused.0.contains("no default tenant"), "{refused:?}");
        assert!(registry.resolve(Some("acme")).is_ok());
    }

    #[tokio::test]
    async fn metric_labels_are_bounded() {
        let registry = Registry::new(factory(2), vec![spec(DEFAULT, "d", "s:s")], None).unwrap();
        registry
            .apply(vec![
                spec("a", "a", "s:s"),
                spec("b", "b", "s:s"),
                spec("c", "c", "s:s"),
            ])
            .unwrap();
        let labels: Vec<String> = registry
            .tenants()
            .values()
            .map(|t| t.label().to_string())
            .collect();
        // Built in order: default, a, b, c; two labels, then `other`.
        assert_eq!(
            labels.iter().filter(|l| *l == OTHER_LABEL).count(),
            2,
            "{labels:?}"
        );
        // A tenant rebuilt keeps the label it had.
        registry.apply(vec![spec("a", "a", "x:x")]).unwrap();
        assert_eq!(
            registry.resolve(Some("a")).unwrap().label().to_string(),
            "a"
        );
    }
}
