//! `/docs`: the API reference (Swagger UI) of `/openapi.json`, served from
//! files embedded in the binary (`src/http/docs/`, vendored from npm's
//! `swagger-ui-dist` by `scripts/vendor-swagger-ui`), so it works without a
//! CDN or the network. Like `/openapi.json`, it needs no token: it shows
//! what the API accepts, never any data; "Authorize" takes a token for the
//! calls made from the page.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// Scripts and styles only from this server; Swagger UI sets inline styles
/// and shows data: images. Calls go to this server only.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

const FILES: [(&str, &str, &[u8]); 4] = [
    ("/docs", "text/html; charset=utf-8", include_bytes!("docs/index.html")),
    ("/docs/init.js", "text/javascript; charset=utf-8", include_bytes!("docs/init.js")),
    ("/docs/swagger-ui-bundle.js", "text/javascript; charset=utf-8", include_bytes!("docs/swagger-ui-bundle.js")),
    ("/docs/swagger-ui.css", "text/css; charset=utf-8", include_bytes!("docs/swagger-ui.css")),
];

/// The routes of the reference page and its files.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    FILES.into_iter().fold(Router::new(), |router, (path, content_type, body)| {
        router.route(
            path,
            get(move || async move {
                let headers = [
                    (CONTENT_TYPE, content_type),
                    (CONTENT_SECURITY_POLICY, POLICY),
                    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (CACHE_CONTROL, "public, max-age=3600"),
                ];
                (headers, body).into_response()
            }),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::FILES;

    /// The page loads only what this server serves: every script and
    /// stylesheet it names is one of the embedded files.
    #[test]
    fn the_page_names_only_embedded_files() {
        let page = std::str::from_utf8(FILES[0].2).unwrap();
        let named: Vec<&str> =
            page.split(['"', '\'']).filter(|part| part.starts_with('/') || part.contains("://")).collect();
        assert!(named.len() >= 3, "{named:?}");
        for name in named {
            assert!(FILES.iter().any(|(path, ..)| *path == name), "{name} is not embedded");
        }
        let init = std::str::from_utf8(FILES[1].2).unwrap();
        assert!(init.contains("url: \"/openapi.json\"") && init.contains("validatorUrl: null"), "{init}");
        assert!(FILES[2].2.len() > 500_000, "the Swagger UI bundle is embedded whole");
    }
}
