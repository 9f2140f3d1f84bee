//! The namespace registry: configurations read from the store, cached in memory.

use foldhash::HashMap;
use std::sync::{Arc, RwLock};

use tally_core::{Namespace, NamespaceConfig};
use tally_store::Store;

use crate::error::{EngineError, EngineResult};

/// Namespace configurations, read through to the store on a miss.
///
/// The store is the source of truth; [`NamespaceRegistry::refresh`] picks up changes other
/// instances made.
pub struct NamespaceRegistry {
    store: Arc<dyn Store>,
    // A std lock: it is never held across an await.
    known: RwLock<HashMap<Namespace, Arc<NamespaceConfig>>>,
}

impl NamespaceRegistry {
    /// A registry over `store`; creates the built-in `default` namespace if it is missing.
    pub async fn open(store: Arc<dyn Store>) -> EngineResult<Self> {
        let registry = Self { store, known: RwLock::default() };
        let default = Namespace::default_namespace();
        match registry.store.create_namespace(&default, &NamespaceConfig::default()).await {
            Ok(()) | Err(tally_store::StoreError::NamespaceExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        registry.refresh().await?;
        Ok(registry)
    }

    /// The configuration of `name`.
    pub async fn get(&self, name: &Namespace) -> EngineResult<Arc<NamespaceConfig>> {
        if let Some(config) = self.read().get(name) {
            return Ok(config.clone());
        }
        let config = self
            .store
            .get_namespace(name)
            .await?
            .ok_or_else(|| EngineError::NamespaceNotFound(name.clone()))?;
        Ok(self.remember(name, config))
    }

    /// Creates a namespace.
    pub async fn create(
        &self,
        name: &Namespace,
        config: NamespaceConfig,
    ) -> EngineResult<Arc<NamespaceConfig>> {
        config.validate()?;
        self.store.create_namespace(name, &config).await?;
        Ok(self.remember(name, config))
    }

    /// The configuration of `name`, creating it with the default settings and `counter_type`
    /// if it is missing (another instance may create it at the same time: the first config
    /// stored wins).
    pub async fn get_or_create(
        &self,
        name: &Namespace,
        counter_type: tally_core::CounterType,
    ) -> EngineResult<Arc<NamespaceConfig>> {
        match self.get(name).await {
            Err(EngineError::NamespaceNotFound(_)) => {}
            found => return found,
        }
        let config = NamespaceConfig { counter_type, ..NamespaceConfig::default() };
        match self.create(name, config).await {
            Err(EngineError::NamespaceExists(_)) => self.get(name).await,
            Ok(created) => {
                metrics::counter!("tally_namespaces_auto_created_total").increment(1);
                tracing::info!(namespace = %name, counter_type = %created.counter_type, "namespace created on its first write");
                Ok(created)
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces a namespace's configuration; the counter type cannot change.
    pub async fn update(
        &self,
        name: &Namespace,
        config: NamespaceConfig,
    ) -> EngineResult<Arc<NamespaceConfig>> {
        config.validate()?;
        let current = self.get(name).await?;
        if current.counter_type != config.counter_type {
            return Err(EngineError::CounterTypeIsFixed {
                namespace: name.clone(),
                from: current.counter_type,
                to: config.counter_type,
            });
        }
        self.store.update_namespace(name, &config).await?;
        Ok(self.remember(name, config))
    }

    /// Deletes a namespace with all its counters; the `default` namespace stays.
    pub async fn delete(&self, name: &Namespace) -> EngineResult<bool> {
        if name.is_default() {
            return Err(EngineError::DefaultNamespaceIsPermanent);
        }
        let existed = self.store.delete_namespace(name).await?;
        self.write().remove(name);
        Ok(existed)
    }

    /// Every namespace, from the store.
    pub async fn list(&self) -> EngineResult<Vec<(Namespace, NamespaceConfig)>> {
        Ok(self.store.list_namespaces().await?)
    }

    /// Reloads every configuration from the store.
    pub async fn refresh(&self) -> EngineResult<()> {
        let all = self.store.list_namespaces().await?;
        *self.write() = all.into_iter().map(|(n, c)| (n, Arc::new(c))).collect();
        Ok(())
    }

    /// The configurations known right now, without asking the store.
    pub fn snapshot(&self) -> Vec<(Namespace, Arc<NamespaceConfig>)> {
        self.read().iter().map(|(n, c)| (n.clone(), c.clone())).collect()
    }

    fn remember(&self, name: &Namespace, config: NamespaceConfig) -> Arc<NamespaceConfig> {
        let config = Arc::new(config);
        self.write().insert(name.clone(), config.clone());
        config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Namespace, Arc<NamespaceConfig>>> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Namespace, Arc<NamespaceConfig>>> {
        self.known.write().unwrap_or_else(|p| p.into_inner())
    }
}
