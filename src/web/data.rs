//! The dashboard's own JSON besides the aggregates (`overview`): API-key settings and the
//! live-update stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::session::{UiUser, check_csrf};
use super::{WebError, WebState};
use crate::store::{ChangeRef, ProjectRecord, WriteOp};
use crate::time::Timestamp;

/// Live updates are coalesced: at most one event per this interval.
const LIVE_COALESCE: Duration = Duration::from_millis(300);
/// Change-log entries one live check reads to decide whether the project was touched.
const LIVE_SCAN: usize = 10_000;

/// `GET /api/ui/keys`: the project's API keys, secrets masked.
pub async fn keys(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
) -> Result<Json<Value>, WebError> {
    let project = u.project;
    let keys = state.read(|s| s.all_api_keys()).await?;
    let data: Vec<Value> = keys
        .into_iter()
        .filter(|k| k.project_id == project)
        .map(|k| {
            json!({"publicKey": k.public_key, "displaySecretKey": k.display_secret,
                   "note": k.note, "createdAt": k.created_at.to_iso()})
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

#[derive(Deserialize, Default)]
pub struct NewKey {
    #[serde(default)]
    note: Option<String>,
}

async fn reload_keys(state: &WebState) -> Result<(), WebError> {
    let (keys, store) = (state.app.keys.clone(), state.app.store.clone());
    state.read(move |_| keys.reload(&store)).await
}

/// `POST /api/ui/keys` `{note?}`: a new key pair; the secret is in this answer only.
pub async fn create_key(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    Json(body): Json<NewKey>,
) -> Result<Json<Value>, WebError> {
    let note = body.note.unwrap_or_default();
    if note.len() > 200 {
        return Err(WebError::BadRequest("note is longer than 200 bytes".into()));
    }
    let (public_key, secret_key) = crate::auth::new_key_pair();
    let rec = crate::auth::key_record(&u.project, &public_key, &secret_key, &note);
    let display = rec.display_secret.clone();
    state
        .app
        .store
        .writer()
        .submit(WriteOp::PutApiKey(rec))
        .await?;
    reload_keys(&state).await?;
    Ok(Json(
        json!({"publicKey": public_key, "secretKey": secret_key,
                   "displaySecretKey": display, "note": note}),
    ))
}

#[derive(Deserialize)]
pub struct NewProject {
    name: String,
}

/// Longest project name accepted.
const PROJECT_NAME_MAX: usize = 100;

/// A URL-friendly project id: the name's letters and digits, then a random suffix so two
/// projects of the same name never collide.
fn project_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", slug.trim_end_matches('-'), &suffix[..8])
        .trim_start_matches('-')
        .to_string()
}

/// `POST /api/ui/projects` `{name}`: a new project in the user's organisation, with the user
/// as its member; API keys for it are created in its settings.
pub async fn create_project(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    Json(body): Json<NewProject>,
) -> Result<Json<Value>, WebError> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.len() > PROJECT_NAME_MAX {
        return Err(WebError::BadRequest(format!(
            "a project name is 1 to {PROJECT_NAME_MAX} bytes"
        )));
    }
    // The new project joins the organisation of the project the request was made from.
    let current = u.project.clone();
    let org = state.read(move |s| s.project(&current)).await?;
    let (org_id, org_name) = org.map_or_else(
        || ("default".to_string(), "Default".to_string()),
        |p| (p.org_id, p.org_name),
    );
    let project = ProjectRecord {
        id: project_id(&name),
        name,
        org_id,
        org_name,
        created_at: Timestamp::now(),
        retention_days: None,
    };
    let answer = json!({"id": project.id, "name": project.name});
    state
        .app
        .store
        .writer()
        .submit(WriteOp::PutProject {
            project,
            member: u.user.email,
        })
        .await?;
    Ok(Json(answer))
}

/// `DELETE /api/ui/keys/{public_key}`: revokes a key of the selected project.
pub async fn revoke_key(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
    Path(public_key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, WebError> {
    // The middleware checked already; repeated here because revoking is the most harmful
    // state change the dashboard offers.
    check_csrf(&headers)?;
    state
        .app
        .store
        .writer()
        .submit(WriteOp::DeleteApiKey {
            project: u.project,
            public_key,
        })
        .await?;
    reload_keys(&state).await?;
    Ok(Json(json!({"ok": true})))
}

fn touches(c: &ChangeRef, project: &str) -> bool {
    match c {
        ChangeRef::Trace { project: p, .. }
        | ChangeRef::Observation { project: p, .. }
        | ChangeRef::Score { project: p, .. }
        | ChangeRef::TraceDeleted { project: p, .. }
        | ChangeRef::ScoreDeleted { project: p, .. } => p == project,
    }
}

struct Follow {
    state: WebState,
    project: String,
    committed: tokio::sync::watch::Receiver<u64>,
    stopped: tokio::sync::watch::Receiver<bool>,
    seen: u64,
}

/// `GET /api/ui/events?project=`: server-sent `change` events whenever a commit touched the
/// selected project (ids are not sent: the page re-reads what it shows). Ends on shutdown.
pub async fn events(
    State(state): State<WebState>,
    Extension(u): Extension<UiUser>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let committed = state.app.store.writer().subscribe();
    let seen = *committed.borrow();
    let follow = Follow {
        stopped: state.live.stopped(),
        state,
        project: u.project,
        committed,
        seen,
    };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if *f.stopped.borrow() {
                return None;
            }
            tokio::select! {
                r = f.committed.changed() => { if r.is_err() { return None; } }
                _ = f.stopped.changed() => { return None; }
            }
            tokio::time::sleep(LIVE_COALESCE).await;
            let newest = *f.committed.borrow_and_update();
            let (after, project) = (f.seen, f.project.clone());
            let relevant = f
                .state
                .read(move |s| {
                    let changes = s.changes_since(after, LIVE_SCAN)?;
                    // Past the scan limit, assume yes: a spurious refresh is cheaper than a scan.
                    Ok(changes.len() >= LIVE_SCAN
                        || changes.iter().any(|(_, c)| touches(c, &project)))
                })
                .await
                .unwrap_or(true);
            f.seen = newest;
            if relevant {
                let ev = Event::default().event("change").data(newest.to_string());
                return Some((Ok(ev), f));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
