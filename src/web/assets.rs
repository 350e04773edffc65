//! The embedded UI files as an exact-path table, and the headers every dashboard response
//! carries.
//!
//! Assets are served under `/assets/<version>/`, where the version is a digest of every file:
//! the URL changes whenever any file changes, so files can be cached as immutable, and relative
//! ES-module imports keep working without a build step. Lookups are exact string matches into
//! the table compiled into the binary (`debug-embed` makes debug builds embed too), so there is
//! no filesystem path to traverse; suspicious paths are refused before the lookup anyway.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::WebState;

#[derive(rust_embed::RustEmbed)]
#[folder = "assets/"]
#[exclude = "*.md"]
struct Files;

/// Nothing but our own origin; no inline script or style, no framing, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = "index.html";
const BASE_PLACEHOLDER: &str = "{{BASE}}";

pub struct Table {
    version: String,
    index_html: String,
    index_etag: String,
}

impl Table {
    pub fn build() -> Table {
        let mut names: Vec<Cow<'static, str>> = Files::iter().collect();
        names.sort();
        let mut h = Sha256::new();
        for name in &names {
            if let Some(f) = Files::get(name) {
                h.update(name.as_bytes());
                h.update(f.metadata.sha256_hash());
            }
        }
        let version = hex(&h.finalize()[..6]);
        let template = Files::get(INDEX)
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_default();
        let index_html = template.replace(BASE_PLACEHOLDER, &format!("/assets/{version}"));
        let index_etag = format!("\"{}\"", hex(&Sha256::digest(index_html.as_bytes())[..8]));
        Table {
            version,
            index_html,
            index_etag,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// A path the table could hold: relative, no dot segments, no escapes or separators that some
/// other layer might interpret. Axum has already percent-decoded once, so a `%` left here means
/// double encoding.
fn plausible(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path
            .chars()
            .any(|c| matches!(c, '\\' | '%' | '\0' | ':') || c.is_control())
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn respond(
    headers: &HeaderMap,
    etag: &str,
    cache: &'static str,
    ctype: &str,
    body: Vec<u8>,
) -> Response {
    let mut r = if etag_matches(headers, etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    r
}

/// `GET /assets/<version>/<path>`: an embedded file, cacheable forever under this version.
pub async fn asset(
    State(state): State<WebState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    // A path that does not even decode (invalid UTF-8 such as `%c0%ae`) names no file either.
    let Ok(Path((version, path))) = path else {
        return not_found();
    };
    if version != state.assets.version || !plausible(&path) || path == INDEX {
        return not_found();
    }
    let Some(file) = Files::get(&path) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..8]));
    respond(
        &headers,
        &etag,
        "public, max-age=31536000, immutable",
        content_type(&path),
        file.data.into_owned(),
    )
}

/// `GET /` and `GET /project/...` (Langfuse's `htmlPath` deep links): the single page. The
/// client routes on the location; the page itself must be revalidated so a new binary's asset
/// version is picked up.
pub async fn index(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let t = &state.assets;
    respond(
        &headers,
        &t.index_etag,
        "no-cache",
        content_type(INDEX),
        t.index_html.clone().into_bytes(),
    )
}

/// Adds the security headers to every dashboard response (HTML, assets, JSON, errors).
pub async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::plausible;

    #[test]
    fn only_plain_relative_paths_are_plausible() {
        for ok in ["app.css", "js/main.js", "js/views/trace.js"] {
            assert!(plausible(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../Cargo.toml",
            "js/../../Cargo.toml",
            "js/./main.js",
            "js//main.js",
            "..\\Cargo.toml",
            "%2e%2e/Cargo.toml",
            "js/main.js\0",
            "C:/x",
        ] {
            assert!(!plausible(bad), "{bad:?}");
        }
    }
}
