//! The price book: built-in and project models, compiled, with a match cache.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use regex::{Regex, RegexSet, RegexSetBuilder};
use serde_json::Value;

use super::CostError;
use super::compute::{self, CompiledModel, CompiledTier, Condition};
use super::model::{ModelDef, TierCondition};
use super::tokenize::Tokenizer;
use crate::record::ObservationRecord;

/// Langfuse's managed price list, shipped inside the binary (see `data/README.md`).
const BUILTIN_PRICES: &str = include_str!("../../data/model-prices.json");

/// Distinct model strings remembered per map before it is cleared and refilled.
const MATCH_CACHE_CAPACITY: usize = 10_000;
/// Longer model strings are matched every time rather than cached (bounds cache memory).
const MATCH_CACHE_MAX_KEY: usize = 256;

/// Every model definition Sightline prices with, compiled for matching.
///
/// Cheap to clone (one `Arc`). Built once from the embedded file; project models are layered
/// on with [`PriceBook::with_project_models`], which returns a new book (the built-ins are
/// shared, the cache starts empty) — swap it in when a project's models change.
#[derive(Debug, Clone)]
pub struct PriceBook {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    builtin: Arc<Catalog>,
    /// Config-file models that apply to every project: they beat built-ins and lose to the
    /// project's own models.
    site: Arc<Catalog>,
    projects: HashMap<String, Catalog>,
    cache: MatchCache,
}

/// Models in match precedence order, and one automaton that tests all their patterns at once.
#[derive(Debug)]
struct Catalog {
    models: Vec<CompiledModel>,
    /// `None` only if the combined automaton exceeds the regex size limit; then each
    /// pattern is tried in order.
    set: Option<RegexSet>,
}

#[derive(Debug, Clone, Copy)]
enum Hit {
    Project(u32),
    Site(u32),
    Builtin(u32),
}

#[derive(Debug, Default)]
struct MatchCache {
    /// Model string → site or built-in model, for projects without models of their own.
    shared: RwLock<HashMap<String, Option<Hit>>>,
    /// Project → model string → hit.
    projects: RwLock<HashMap<String, HashMap<String, Option<Hit>>>>,
    project_entries: std::sync::atomic::AtomicUsize,
}

impl PriceBook {
    /// The book of Langfuse's default models, from the embedded price file.
    pub fn builtin() -> Result<PriceBook, CostError> {
        let entries: Vec<Value> = serde_json::from_str(BUILTIN_PRICES)
            .map_err(|e| CostError::BuiltinFile(e.to_string()))?;
        let mut compiled = Vec::with_capacity(entries.len());
        let mut regexes = RegexCache::default();
        for (index, entry) in entries.iter().enumerate() {
            let def = ModelDef::from_langfuse_json(entry).map_err(|e| CostError::BuiltinModel {
                index,
                source: Box::new(e),
            })?;
            let model = compile(def, &mut regexes).map_err(|e| CostError::BuiltinModel {
                index,
                source: Box::new(e),
            })?;
            compiled.push(model);
        }
        Ok(PriceBook {
            inner: Arc::new(Inner {
                builtin: Arc::new(Catalog::new(compiled)),
                site: Arc::new(Catalog::new(Vec::new())),
                projects: HashMap::new(),
                cache: MatchCache::default(),
            }),
        })
    }

    /// A book with these site-wide models (from the config file, for every project) and this
    /// book's built-ins; project models are dropped (layer them on afterwards). Models are
    /// expected to be validated already; one that does not compile is skipped with a warning.
    pub fn with_site_models(&self, models: Vec<ModelDef>) -> PriceBook {
        let mut regexes = RegexCache::default();
        let compiled = models
            .into_iter()
            .filter_map(|def| match compile(def, &mut regexes) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a config model that does not compile");
                    None
                }
            })
            .collect();
        PriceBook {
            inner: Arc::new(Inner {
                builtin: Arc::clone(&self.inner.builtin),
                site: Arc::new(Catalog::new(compiled)),
                projects: HashMap::new(),
                cache: MatchCache::default(),
            }),
        }
    }

    /// A book with these project models and this book's built-ins. `models` replaces every
    /// project model the book had; pass all of them. Project models win over built-ins for
    /// their project, also when patterns overlap (Langfuse's issue #2491).
    ///
    /// Models are expected to be validated already ([`ModelDef::from_langfuse_json`]); one
    /// that does not compile, or has no project id, is skipped with a warning.
    pub fn with_project_models(&self, models: Vec<ModelDef>) -> PriceBook {
        let mut regexes = RegexCache::default();
        let mut by_project: HashMap<String, Vec<CompiledModel>> = HashMap::new();
        for def in models {
            let Some(project) = def.project_id.clone() else {
                tracing::warn!(model_id = %def.id, "skipping a project model without a project id");
                continue;
            };
            match compile(def, &mut regexes) {
                Ok(m) => by_project.entry(project).or_default().push(m),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a project model that does not compile")
                }
            }
        }
        PriceBook {
            inner: Arc::new(Inner {
                builtin: Arc::clone(&self.inner.builtin),
                site: Arc::clone(&self.inner.site),
                projects: by_project
                    .into_iter()
                    .map(|(p, models)| (p, Catalog::new(models)))
                    .collect(),
                cache: MatchCache::default(),
            }),
        }
    }

    /// The model a raw model string prices as, in Langfuse's order: the project's models
    /// first, then site-wide config models, then built-ins; within each, newest `start_date` first (none last), then the
    /// newest definition. Matches are cached per (project, model string).
    pub fn find(&self, project_id: &str, model: &str) -> Option<&ModelDef> {
        self.resolve(project_id, model).map(|m| &m.def)
    }

    /// The project's models and the built-ins, in the order of Langfuse's model list
    /// (`modelName`, `unit` (none last), `startDate` newest first (none last)).
    pub fn models(&self, project_id: &str) -> Vec<&ModelDef> {
        let mut all: Vec<&ModelDef> = self
            .inner
            .projects
            .get(project_id)
            .into_iter()
            .flat_map(|c| c.models.iter())
            .chain(self.inner.site.models.iter())
            .chain(self.inner.builtin.models.iter())
            .map(|m| &m.def)
            .collect();
        all.sort_by(|a, b| {
            a.model_name
                .cmp(&b.model_name)
                .then_with(|| none_last(a.unit.as_ref(), b.unit.as_ref(), |x, y| x.cmp(y)))
                .then_with(|| none_last(a.start_date, b.start_date, |x, y| y.cmp(&x)))
                .then_with(|| a.is_builtin().cmp(&b.is_builtin()))
        });
        all
    }

    /// A model visible to the project (its own or built-in) by id.
    pub fn get(&self, project_id: &str, model_id: &str) -> Option<&ModelDef> {
        self.inner
            .projects
            .get(project_id)
            .into_iter()
            .flat_map(|c| c.models.iter())
            .chain(self.inner.site.models.iter())
            .chain(self.inner.builtin.models.iter())
            .map(|m| &m.def)
            .find(|d| d.id == model_id)
    }

    /// Resolves usage and cost of a merged observation: fills `usage_details`, `cost_details`,
    /// `pricing` and `usage_estimated`, replacing what an earlier call wrote. `input`/`output`
    /// are the stored input and output, read only when the tokenizer has to count.
    ///
    /// An observation whose model matches nothing gets no pricing and no computed cost (but
    /// keeps client-supplied costs): the caller reports it as unpriced, never as $0.
    pub fn apply(
        &self,
        project_id: &str,
        obs: &mut ObservationRecord,
        input: Option<&Value>,
        output: Option<&Value>,
    ) {
        let model = obs
            .model
            .as_deref()
            .filter(|m| !m.is_empty())
            .and_then(|m| self.resolve(project_id, m));
        compute::price_observation(model, obs, input, output);
    }

    fn resolve(&self, project_id: &str, model: &str) -> Option<&CompiledModel> {
        let inner = &*self.inner;
        let shared = || {
            inner
                .site
                .find(model)
                .map(Hit::Site)
                .or_else(|| inner.builtin.find(model).map(Hit::Builtin))
        };
        let project = inner.projects.get(project_id);
        let hit = match project {
            None => inner.cache.shared(model, shared)?,
            Some(p) => inner.cache.project(project_id, model, || {
                p.find(model).map(Hit::Project).or_else(shared)
            })?,
        };
        match hit {
            Hit::Project(i) => project?.models.get(i as usize),
            Hit::Site(i) => inner.site.models.get(i as usize),
            Hit::Builtin(i) => inner.builtin.models.get(i as usize),
        }
    }
}

impl Catalog {
    fn new(mut models: Vec<CompiledModel>) -> Catalog {
        models.sort_by(|a, b| precedence(&a.def, &b.def));
        let set = RegexSetBuilder::new(models.iter().map(|m| m.def.match_pattern.as_str()))
            .build()
            .ok();
        Catalog { models, set }
    }

    /// Index of the first model (in precedence order) whose pattern matches.
    fn find(&self, model: &str) -> Option<u32> {
        let idx = match &self.set {
            Some(set) => set.matches(model).iter().next(),
            None => self.models.iter().position(|m| m.matcher.is_match(model)),
        }?;
        u32::try_from(idx).ok()
    }
}

/// Match precedence within one catalog: `start_date` newest first, none last; then the newest
/// definition (Postgres leaves such ties unordered); then id, for determinism.
fn precedence(a: &ModelDef, b: &ModelDef) -> Ordering {
    none_last(a.start_date, b.start_date, |x, y| y.cmp(&x))
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| a.id.cmp(&b.id))
}

fn none_last<T>(a: Option<T>, b: Option<T>, cmp: impl Fn(T, T) -> Ordering) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => cmp(x, y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl MatchCache {
    fn shared(&self, model: &str, find: impl FnOnce() -> Option<Hit>) -> Option<Hit> {
        if let Some(hit) = read(&self.shared).get(model) {
            return *hit;
        }
        let hit = find();
        if model.len() <= MATCH_CACHE_MAX_KEY {
            let mut map = write(&self.shared);
            if map.len() >= MATCH_CACHE_CAPACITY {
                map.clear();
            }
            map.insert(model.to_string(), hit);
        }
        hit
    }

    fn project(
        &self,
        project_id: &str,
        model: &str,
        find: impl FnOnce() -> Option<Hit>,
    ) -> Option<Hit> {
        if let Some(hit) = read(&self.projects)
            .get(project_id)
            .and_then(|m| m.get(model))
        {
            return *hit;
        }
        let hit = find();
        if model.len() <= MATCH_CACHE_MAX_KEY {
            use std::sync::atomic::Ordering::Relaxed;
            let mut map = write(&self.projects);
            if self.project_entries.load(Relaxed) >= MATCH_CACHE_CAPACITY {
                map.clear();
                self.project_entries.store(0, Relaxed);
            }
            let fresh = map
                .entry(project_id.to_string())
                .or_default()
                .insert(model.to_string(), hit)
                .is_none();
            if fresh {
                self.project_entries.fetch_add(1, Relaxed);
            }
        }
        hit
    }
}

// A panic while holding the lock leaves a cache that is still consistent (inserts are
// single calls), so a poisoned lock is used as is.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// Usage-condition patterns repeat across tiers ("(input|prompt|cached)"); compile each once.
#[derive(Default)]
struct RegexCache(HashMap<(String, bool), Regex>);

impl RegexCache {
    fn get(&mut self, pattern: &str, case_insensitive: bool) -> Result<Regex, CostError> {
        let key = (pattern.to_string(), case_insensitive);
        if let Some(r) = self.0.get(&key) {
            return Ok(r.clone());
        }
        let r = super::model::check_regex(pattern, case_insensitive)?;
        self.0.insert(key, r.clone());
        Ok(r)
    }
}

fn compile(def: ModelDef, regexes: &mut RegexCache) -> Result<CompiledModel, CostError> {
    let matcher = super::model::check_regex(&def.match_pattern, false)?;
    let mut tiers = Vec::new();
    let mut default_tier = None;
    for (index, tier) in def.pricing_tiers.iter().enumerate() {
        let conditions = tier
            .conditions
            .iter()
            .map(|c| {
                Ok(match c {
                    TierCondition::Usage {
                        pattern,
                        op,
                        value,
                        case_sensitive,
                    } => Condition::Usage {
                        regex: regexes.get(pattern, !case_sensitive)?,
                        op: *op,
                        value: *value,
                    },
                    TierCondition::Attribute {
                        source,
                        key,
                        values,
                    } => Condition::Attribute {
                        source: *source,
                        key: key.clone(),
                        values: values.clone(),
                    },
                })
            })
            .collect::<Result<Vec<_>, CostError>>()?;
        let prices = tier
            .prices
            .iter()
            .map(|(k, p)| {
                let d =
                    super::amount::Dec::from_f64(*p).ok_or_else(|| CostError::InvalidField {
                        field: "prices",
                        reason: format!("price for \"{k}\" must be a non-negative number"),
                    })?;
                Ok((k.clone(), d))
            })
            .collect::<Result<_, CostError>>()?;
        let compiled = CompiledTier {
            index,
            conditions,
            prices,
        };
        if tier.is_default && default_tier.is_none() {
            default_tier = Some(compiled);
        } else if !tier.is_default {
            tiers.push(compiled);
        }
    }
    tiers.sort_by_key(|t| def.pricing_tiers[t.index].priority);
    let tokenizer = Tokenizer::resolve(def.tokenizer_id.as_deref(), def.tokenizer_config.as_ref());
    Ok(CompiledModel {
        def,
        matcher,
        tiers,
        default_tier,
        tokenizer,
    })
}
