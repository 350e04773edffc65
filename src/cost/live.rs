//! The price book the writer prices with, swapped in place when models change.

use std::sync::{Arc, RwLock};

use super::{ModelDef, PriceBook};
use crate::record::ObservationRecord;
use crate::store::Pricer;

/// Built-ins and config-file models, plus the stored project models, behind a lock that is held
/// only to clone or replace an `Arc` — pricing itself never blocks a model change.
#[derive(Debug)]
pub struct LivePrices {
    /// Built-ins with the site-wide config models.
    base: PriceBook,
    /// Config-file models scoped to one project (`projectId` set).
    config_project: Vec<ModelDef>,
    current: RwLock<Arc<PriceBook>>,
}

impl LivePrices {
    /// `config` are the config file's models: those without a project apply to every project.
    pub fn new(builtin: &PriceBook, config: Vec<ModelDef>) -> LivePrices {
        let (scoped, site): (Vec<_>, Vec<_>) =
            config.into_iter().partition(|m| m.project_id.is_some());
        let base = builtin.with_site_models(site);
        let current = RwLock::new(Arc::new(base.with_project_models(scoped.clone())));
        LivePrices {
            base,
            config_project: scoped,
            current,
        }
    }

    /// The book in force now.
    pub fn current(&self) -> Arc<PriceBook> {
        // A poisoned lock still holds a whole `Arc` (replacement is one store), so use it.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Pricer for LivePrices {
    fn apply(
        &self,
        project: &str,
        obs: &mut ObservationRecord,
        input: Option<&serde_json::Value>,
        output: Option<&serde_json::Value>,
    ) {
        self.current().apply(project, obs, input, output);
    }

    fn set_project_models(&self, mut models: Vec<ModelDef>) {
        models.extend(self.config_project.iter().cloned());
        let book = Arc::new(self.base.with_project_models(models));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = book;
    }
}
