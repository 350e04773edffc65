//! Login sessions, CSRF checks and login rate limiting.
//!
//! A session is a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the store keeps
//! only its SHA-256 (a stolen data file cannot resume sessions), so logout and expiry end a
//! session server-side. State-changing requests must carry the custom `X-Sightline-Csrf` header
//! (a cross-site page cannot add one without a CORS preflight we never grant) and, when the
//! browser sends `Origin`, it must be this host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{WebError, WebState};
use crate::api::SessionPrincipal;
use crate::auth::{self, AccessLevel, Principal};
use crate::store::{UserRecord, WebSessionRecord, WriteOp};
use crate::time::Timestamp;

pub const COOKIE_NAME: &str = "sightline_session";
/// Required on every state-changing dashboard request.
pub const CSRF_HEADER: &str = "x-sightline-csrf";
/// Selects which of the user's projects a request reads; default is the user's first project.
pub const PROJECT_HEADER: &str = "x-sightline-project";
/// A session lasts this long from login.
const SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Failed logins allowed per IP and per email within `FAILURE_WINDOW` before 429.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Keys the limiter tracks before it sweeps stale ones, bounding its memory under a flood.
const LIMITER_SWEEP_AT: usize = 10_000;

/// Who a request is for: the logged-in user and the project this request reads.
#[derive(Clone)]
pub struct UiUser {
    pub user: UserRecord,
    pub project: String,
    pub token_hash: String,
}

fn token_hash(token: &str) -> String {
    super::hex(&Sha256::digest(token.as_bytes()))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Rejects cross-site state changes: the custom header must be present, and a browser-sent
/// `Origin` must name this host.
pub fn check_csrf(headers: &HeaderMap) -> Result<(), WebError> {
    if !headers.contains_key(CSRF_HEADER) {
        return Err(WebError::Csrf);
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    match (origin_host, host) {
        (Some(o), Some(h)) if o == h => Ok(()),
        _ => Err(WebError::Csrf),
    }
}

/// Sliding-window counts of failed logins per key (`ip:…`, `email:…`).
#[derive(Default)]
pub struct RateLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl RateLimiter {
    /// `Err(seconds to wait)` when any key is over the limit.
    fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = 0u64;
        for k in keys {
            if let Some(v) = map.get_mut(k) {
                v.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
                if v.len() >= MAX_FAILURES
                    && let Some(oldest) = v.first()
                {
                    let left = FAILURE_WINDOW.saturating_sub(now.duration_since(*oldest));
                    wait = wait.max(left.as_secs().max(1));
                }
            }
        }
        if wait > 0 { Err(wait) } else { Ok(()) }
    }

    fn fail(&self, keys: &[String]) {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= LIMITER_SWEEP_AT {
            map.retain(|_, v| {
                v.last()
                    .is_some_and(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
        }
        for k in keys {
            map.entry(k.clone()).or_default().push(now);
        }
    }
}

#[derive(Deserialize)]
pub struct LoginBody {
    email: String,
    password: String,
}

/// A hash to verify against when the email is unknown, so a miss costs as much as a wrong
/// password and response time does not reveal which emails exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| auth::hash_password("sightline-decoy").unwrap_or_default())
}

fn session_cookie(value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// Secure cookies only when the browser reached us over TLS (through a proxy that says so);
/// otherwise a plain-http appliance on a LAN could never log in.
fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// `POST /api/ui/login` `{email, password}` → sets the session cookie.
pub async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response, WebError> {
    check_csrf(&headers)?;
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| WebError::BadRequest("login body too large".into()))?;
    let body: LoginBody = serde_json::from_slice(&bytes)
        .map_err(|e| WebError::BadRequest(format!("expected {{email, password}}: {e}")))?;
    let email = body.email.trim().to_lowercase();
    let keys = [format!("ip:{ip}"), format!("email:{email}")];
    state.limiter.check(&keys).map_err(WebError::RateLimited)?;

    let lookup = email.clone();
    let user = state.read(move |s| s.user(&lookup)).await?;
    let password = body.password;
    let hash = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_string(), |u| u.password_hash.clone());
    // argon2id is deliberately slow: keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || auth::verify_password(&password, &hash))
        .await
        .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        state.limiter.fail(&keys);
        tracing::info!(%ip, "dashboard login failed");
        return Err(WebError::BadCredentials);
    };

    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = super::hex(&raw);
    let now = Timestamp::now();
    let ttl_micros = i64::try_from(SESSION_TTL.as_micros()).unwrap_or(i64::MAX);
    let op = WriteOp::PutWebSession {
        token_hash: token_hash(&token),
        session: WebSessionRecord {
            email: user.email.clone(),
            created_at: now,
            expires_at: Timestamp::from_micros(now.micros().saturating_add(ttl_micros)),
        },
        now,
    };
    state
        .app
        .store
        .writer()
        .submit(op)
        .await
        .map_err(WebError::Store)?;
    let mut r = Json(json!({"email": user.email, "name": user.name})).into_response();
    if let Some(c) = session_cookie(&token, SESSION_TTL.as_secs(), is_https(&headers)) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(r)
}

/// `POST /api/ui/logout`: deletes the session server-side and clears the cookie.
pub async fn logout(
    State(state): State<WebState>,
    axum::Extension(u): axum::Extension<UiUser>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    state
        .app
        .store
        .writer()
        .submit(WriteOp::DeleteWebSession {
            token_hash: u.token_hash,
        })
        .await?;
    let mut r = Json(json!({"ok": true})).into_response();
    if let Some(c) = session_cookie("", 0, is_https(&headers)) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(r)
}

/// `GET /api/ui/me`: the user, their projects and the one this request selected.
pub async fn me(
    State(state): State<WebState>,
    axum::Extension(u): axum::Extension<UiUser>,
) -> Result<Json<serde_json::Value>, WebError> {
    let ids = u.user.project_ids.clone();
    let projects = state
        .read(move |s| {
            let mut out = Vec::new();
            for id in &ids {
                if let Some(p) = s.project(id)? {
                    out.push(json!({"id": p.id, "name": p.name}));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(json!({
        "email": u.user.email,
        "name": u.user.name,
        "projects": projects,
        "project": u.project,
    })))
}

fn requested_project(req: &Request) -> Option<String> {
    if let Some(p) = req
        .headers()
        .get(PROJECT_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        return Some(p.to_string());
    }
    // EventSource cannot send headers, so the stream names its project in the query.
    let q = req.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(q)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "project")
        .map(|(_, v)| v)
}

/// Middleware of every `/api/ui` route but login: a live session, CSRF on state changes, and a
/// project the user belongs to. Hands the handlers a `UiUser` and the public read handlers a
/// `SessionPrincipal` for that project.
pub async fn require(
    State(state): State<WebState>,
    mut req: Request,
    next: Next,
) -> Result<Response, WebError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        check_csrf(req.headers())?;
    }
    let token = cookie(req.headers(), COOKIE_NAME)
        .filter(|t| !t.is_empty())
        .ok_or(WebError::NotLoggedIn)?;
    let hash = token_hash(&token);
    let lookup = hash.clone();
    let user = state
        .read(move |s| {
            let Some(session) = s.web_session(&lookup)? else {
                return Ok(None);
            };
            if session.expires_at <= Timestamp::now() {
                return Ok(None);
            }
            s.user(&session.email)
        })
        .await?
        .ok_or(WebError::NotLoggedIn)?;
    let project = match requested_project(&req) {
        Some(p) if user.project_ids.contains(&p) => p,
        Some(p) => return Err(WebError::NoProject(p)),
        None => user
            .project_ids
            .first()
            .cloned()
            .ok_or_else(|| WebError::NoProject(String::new()))?,
    };
    req.extensions_mut().insert(SessionPrincipal(Principal {
        project_id: project.clone(),
        public_key: format!("session:{}", user.email),
        access: AccessLevel::Full,
    }));
    req.extensions_mut().insert(UiUser {
        user,
        project,
        token_hash: hash,
    });
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn csrf_needs_the_header_and_a_same_origin() {
        assert!(check_csrf(&headers(&[])).is_err());
        assert!(check_csrf(&headers(&[(CSRF_HEADER, "1")])).is_ok());
        let same = [
            (CSRF_HEADER, "1"),
            ("host", "a:3000"),
            ("origin", "http://a:3000"),
        ];
        assert!(check_csrf(&headers(&same)).is_ok());
        let cross = [
            (CSRF_HEADER, "1"),
            ("host", "a:3000"),
            ("origin", "http://evil"),
        ];
        assert!(check_csrf(&headers(&cross)).is_err());
        let null = [(CSRF_HEADER, "1"), ("host", "a:3000"), ("origin", "null")];
        assert!(check_csrf(&headers(&null)).is_err());
    }

    #[test]
    fn limiter_blocks_after_five_failures_per_key() {
        let l = RateLimiter::default();
        let keys = ["ip:1".to_string(), "email:a".to_string()];
        for _ in 0..MAX_FAILURES {
            assert!(l.check(&keys).is_ok());
            l.fail(&keys);
        }
        assert!(l.check(&keys).is_err());
        // Another email from another address is unaffected.
        assert!(l.check(&["ip:2".into(), "email:b".into()]).is_ok());
        // The same email from a new address is still blocked.
        assert!(l.check(&["ip:3".into(), "email:a".into()]).is_err());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; sightline_session=tok; b=2")]);
        assert_eq!(cookie(&h, COOKIE_NAME).as_deref(), Some("tok"));
    }
}
