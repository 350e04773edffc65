//! Who is calling: project API keys (Basic `public:secret`, or a public key alone for scores),
//! dashboard users, and the first-run bootstrap that creates them.
//!
//! Owns: secret hashing (salted SHA-256 for high-entropy API secrets, argon2id for passwords),
//! constant-time comparison, and the access level a credential grants. Must not touch: routing
//! or what a handler does with a principal — handlers ask for the access level they need.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Bootstrap;
use crate::store::{ApiKeyRecord, ProjectRecord, Store, StoreError, UserRecord};
use crate::time::Timestamp;

/// What a credential may do within its project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLevel {
    /// Basic auth with public and secret key: everything project-scoped.
    Full,
    /// Bearer public key only: create scores, nothing else (as Langfuse allows).
    ScoresOnly,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub project_id: String,
    pub public_key: String,
    pub access: AccessLevel,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("No authorization header")]
    Missing,
    #[error("Invalid authorization header")]
    BadScheme,
    #[error("Invalid authorization header. Confirm that you've configured the correct host.")]
    Malformed,
    #[error("Invalid credentials. Confirm that you've configured the correct host.")]
    BadCredentials,
    #[error("Invalid public key. Confirm that you've configured the correct host.")]
    UnknownPublicKey,
    #[error("Access denied - insufficient permissions for this endpoint")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The API keys, held in memory so that authenticating a request never touches the disk.
/// Reloaded whenever keys change (bootstrap, settings).
#[derive(Clone, Default)]
pub struct KeyCache {
    keys: Arc<RwLock<HashMap<String, ApiKeyRecord>>>,
}

impl KeyCache {
    pub fn load(store: &Store) -> Result<KeyCache, StoreError> {
        let cache = KeyCache::default();
        cache.reload(store)?;
        Ok(cache)
    }

    pub fn reload(&self, store: &Store) -> Result<(), StoreError> {
        let all: HashMap<String, ApiKeyRecord> = store
            .all_api_keys()?
            .into_iter()
            .map(|k| (k.public_key.clone(), k))
            .collect();
        if let Ok(mut keys) = self.keys.write() {
            *keys = all;
        }
        Ok(())
    }

    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        authenticate_with(header, |pk| {
            Ok(self.keys.read().ok().and_then(|k| k.get(pk).cloned()))
        })
    }
}

/// Checks an `Authorization` header value against the stored keys.
pub fn authenticate(store: &Store, header: Option<&str>) -> Result<Principal, AuthError> {
    authenticate_with(header, |pk| store.api_key(pk))
}

fn authenticate_with(
    header: Option<&str>,
    lookup: impl Fn(&str) -> Result<Option<ApiKeyRecord>, StoreError>,
) -> Result<Principal, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    if let Some(encoded) = header.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| AuthError::Malformed)?;
        let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
        let (public, secret) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
        if public.is_empty() || secret.is_empty() {
            return Err(AuthError::Malformed);
        }
        let key = lookup(public)?.ok_or(AuthError::BadCredentials)?;
        let hash = hash_secret(&key.salt, secret);
        if !bool::from(hash.as_bytes().ct_eq(key.secret_hash.as_bytes())) {
            return Err(AuthError::BadCredentials);
        }
        return Ok(Principal {
            project_id: key.project_id,
            public_key: key.public_key,
            access: AccessLevel::Full,
        });
    }
    if let Some(public) = header.strip_prefix("Bearer ") {
        let key = lookup(public.trim())?.ok_or(AuthError::UnknownPublicKey)?;
        return Ok(Principal {
            project_id: key.project_id,
            public_key: key.public_key,
            access: AccessLevel::ScoresOnly,
        });
    }
    Err(AuthError::BadScheme)
}

/// Hex SHA-256 of `salt || secret`. API secrets are long random strings, so a fast salted hash
/// is enough and keeps every authenticated request cheap; passwords use argon2id instead.
pub fn hash_secret(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut buf);
    hex(&buf)
}

/// A key record for a known secret; the secret itself is not kept.
pub fn key_record(project_id: &str, public: &str, secret: &str, note: &str) -> ApiKeyRecord {
    let salt = random_hex(16);
    let tail: String = secret
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let head: String = secret.chars().take(6).collect();
    ApiKeyRecord {
        public_key: public.to_string(),
        project_id: project_id.to_string(),
        secret_hash: hash_secret(&salt, secret),
        salt,
        display_secret: format!("{head}...{tail}"),
        note: Some(note.to_string()),
        created_at: Timestamp::now(),
    }
}

/// A fresh `pk-lf-…` / `sk-lf-…` pair in Langfuse's format.
pub fn new_key_pair() -> (String, String) {
    (
        format!("pk-lf-{}", uuid::Uuid::new_v4()),
        format!("sk-lf-{}", uuid::Uuid::new_v4()),
    )
}

pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// What the first run created, for the one-time banner. Holds secrets: never log it.
pub struct FirstRun {
    pub project_id: String,
    pub public_key: String,
    pub secret_key: String,
    pub user_email: String,
    pub user_password: String,
    pub credentials_file: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot hash the init user's password: {0}")]
    Password(String),
    #[error("cannot write the first-run credentials file {path}: {reason}")]
    CredentialsFile { path: String, reason: String },
}

pub const DEFAULT_PROJECT_ID: &str = "default";

/// Applies `LANGFUSE_INIT_*` (idempotent, as Langfuse does) and, on a store with no project at
/// all, creates a default project, key pair and dashboard user.
pub fn bootstrap(
    store: &Store,
    init: &Bootstrap,
    data_dir: &Path,
) -> Result<Option<FirstRun>, BootstrapError> {
    let now = Timestamp::now();
    if let Some(org_id) = &init.org_id {
        let mut projects = Vec::new();
        let mut keys = Vec::new();
        let mut delete = Vec::new();
        let mut users = Vec::new();
        if let Some(project_id) = &init.project_id {
            if store.project(project_id)?.is_none() {
                projects.push(ProjectRecord {
                    id: project_id.clone(),
                    name: init
                        .project_name
                        .clone()
                        .unwrap_or_else(|| "Provisioned Project".into()),
                    org_id: org_id.clone(),
                    org_name: init
                        .org_name
                        .clone()
                        .unwrap_or_else(|| "Provisioned Org".into()),
                    created_at: now,
                    retention_days: None,
                });
            }
            match (&init.public_key, &init.secret_key) {
                (Some(pk), Some(sk)) => match store.api_key(pk)? {
                    Some(existing) if existing.project_id == *project_id => {}
                    Some(_) => {
                        delete.push(pk.clone());
                        keys.push(key_record(project_id, pk, sk, "Provisioned API Key"));
                    }
                    None => keys.push(key_record(project_id, pk, sk, "Provisioned API Key")),
                },
                (None, None) => {}
                _ => tracing::warn!(
                    "LANGFUSE_INIT_PROJECT_PUBLIC_KEY and _SECRET_KEY must be set together; skipped"
                ),
            }
        }
        match (&init.user_email, &init.user_password) {
            (Some(email), Some(password)) => {
                let email = email.to_lowercase();
                let existing = store.user(&email)?;
                // An existing user joins a newly provisioned project (Langfuse makes the init
                // user a member of the init project); the password is never reset here.
                if let (Some(mut user), Some(project_id)) = (existing.clone(), &init.project_id)
                    && !user.project_ids.contains(project_id)
                {
                    user.project_ids.push(project_id.clone());
                    users.push(user);
                }
                if existing.is_none() {
                    users.push(UserRecord {
                        email,
                        name: init
                            .user_name
                            .clone()
                            .unwrap_or_else(|| "Provisioned User".into()),
                        password_hash: hash_password(password).map_err(BootstrapError::Password)?,
                        project_ids: init.project_id.iter().cloned().collect(),
                        created_at: now,
                    });
                }
            }
            (None, None) => {}
            _ => tracing::warn!(
                "LANGFUSE_INIT_USER_EMAIL and _PASSWORD must be set together; skipped"
            ),
        }
        store.put_admin(&projects, &keys, &users, &delete)?;
    } else if !init.is_empty() {
        tracing::warn!("LANGFUSE_INIT_* variables are ignored without LANGFUSE_INIT_ORG_ID");
    }

    if !store.projects()?.is_empty() {
        return Ok(None);
    }
    let (public_key, secret_key) = new_key_pair();
    let user_email = "admin@localhost".to_string();
    let user_password = random_hex(12);
    let project = ProjectRecord {
        id: DEFAULT_PROJECT_ID.into(),
        name: "Default Project".into(),
        org_id: "default".into(),
        org_name: "Default Organization".into(),
        created_at: now,
        retention_days: None,
    };
    let user = UserRecord {
        email: user_email.clone(),
        name: "Admin".into(),
        password_hash: hash_password(&user_password).map_err(BootstrapError::Password)?,
        project_ids: vec![DEFAULT_PROJECT_ID.into()],
        created_at: now,
    };
    let credentials_file = data_dir.join("first-run-credentials.txt");
    write_private(
        &credentials_file,
        &format!(
            "# Sightline first-run credentials. Delete this file once you have stored them.\n\
             LANGFUSE_PUBLIC_KEY={public_key}\nLANGFUSE_SECRET_KEY={secret_key}\n\
             dashboard_email={user_email}\ndashboard_password={user_password}\n"
        ),
    )
    .map_err(|reason| BootstrapError::CredentialsFile {
        path: credentials_file.display().to_string(),
        reason,
    })?;
    store.put_admin(
        &[project],
        &[key_record(
            DEFAULT_PROJECT_ID,
            &public_key,
            &secret_key,
            "Default key",
        )],
        &[user],
        &[],
    )?;
    Ok(Some(FirstRun {
        project_id: DEFAULT_PROJECT_ID.into(),
        public_key,
        secret_key,
        user_email,
        user_password,
        credentials_file,
    }))
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| e.to_string())?;
    f.write_all(contents.as_bytes())
        .map_err(|e| e.to_string())?;
    f.sync_all().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_verifies_only_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn secret_hash_is_salted() {
        assert_ne!(hash_secret("a", "sk"), hash_secret("b", "sk"));
        let rec = key_record("p", "pk-lf-1", "sk-lf-abcdefgh", "n");
        assert_eq!(rec.display_secret, "sk-lf-...efgh");
        assert!(!rec.secret_hash.contains("sk-lf"));
    }
}
