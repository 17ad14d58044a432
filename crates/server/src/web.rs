//! The app: the files of `web/dist`, embedded in the binary at build time (see build.rs),
//! served at `/` with a strict Content-Security-Policy. Paths that are not files get the
//! app's `index.html`, so that its own routes survive a reload. The web build leaves a brotli
//! (`.br`) and a gzip (`.gz`) copy beside each text file; a browser that accepts one gets it.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};

#[derive(rust_embed::Embed)]
#[folder = "../../web/dist"]
struct Assets;

/// No inline or foreign scripts, no framing, connections to this server only. Inline styles
/// stay allowed: xterm.js sizes the terminal with `<style>` elements it writes at runtime.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self'; connect-src 'self'; \
    frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// gzip for the API's JSON answers that are worth it (the agent list shrinks about 5×), at
/// a fast level: it runs per request. Skips what is already encoded (the app's files), event
/// streams (they must flush each event), and bodies under 1 KiB.
pub fn compression() -> CompressionLayer<impl Predicate> {
    CompressionLayer::new()
        .quality(CompressionLevel::Fastest)
        .compress_when(DefaultPredicate::new().and(SizeAbove::new(1024)))
}

/// The precompressed copy of `path` the client accepts, best first: (file, encoding).
fn precompressed(
    path: &str,
    headers: &HeaderMap,
) -> Option<(rust_embed::EmbeddedFile, &'static str)> {
    let accepted = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim();
            // "br;q=0" refuses brotli.
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (!refused).then_some(coding)
        })
        .collect::<Vec<_>>();
    [("br", "br"), ("gzip", "gz")]
        .into_iter()
        .filter(|(coding, _)| accepted.contains(coding))
        .find_map(|(coding, ext)| Assets::get(&format!("{path}.{ext}")).map(|f| (f, coding)))
}

/// Serves an embedded file, or the app's entry page for any other path.
pub async fn serve(uri: Uri, request_headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    let (path, file) = match Assets::get(path).filter(|_| !path.is_empty()) {
        Some(file) => (path, file),
        None => match Assets::get("index.html") {
            Some(file) => ("index.html", file),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    "the app was not built into this binary",
                )
                    .into_response();
            }
        },
    };
    // Vite names assets after their content: they never change, so they may be cached.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let (file, encoding) = match precompressed(path, &request_headers) {
        Some((compressed, encoding)) => (compressed, Some(encoding)),
        None => (file, None),
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    // Caches keep one copy per encoding.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepting(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn the_best_accepted_precompressed_copy_is_chosen() {
        // The app's script is always big enough for the web build to compress it.
        let script = Assets::iter()
            .find(|p| p.starts_with("assets/index-") && p.ends_with(".js"))
            .expect("the app's script");
        let pick = |value: &str| precompressed(&script, &accepting(value)).map(|(_, e)| e);
        assert_eq!(pick("gzip, deflate, br"), Some("br"));
        assert_eq!(pick("gzip"), Some("gzip"));
        assert_eq!(pick("br;q=0, gzip"), Some("gzip"));
        assert_eq!(pick("identity"), None);
        assert_eq!(
            precompressed(&script, &HeaderMap::new()).map(|(_, e)| e),
            None
        );
        let (br, _) = precompressed(&script, &accepting("br")).unwrap();
        assert!(br.data.len() * 2 < Assets::get(&script).unwrap().data.len());
    }
}
