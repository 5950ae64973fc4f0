//! The member web app (`web/`), served at `/` from files built into the
//! binary: `web/dist` is committed, so a fresh clone serves it with nothing
//! but cargo. A strict Content-Security-Policy keeps the page to this node:
//! no script, style or connection goes anywhere else.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::Gateway;

/// A file of the app; its ETag is its hash, computed on first use.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(bytes: &'static [u8], content_type: &'static str) -> Asset {
        Asset {
            bytes,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> HeaderValue {
        self.etag
            .get_or_init(|| {
                let hash = blake3::hash(self.bytes);
                HeaderValue::from_str(&format!("\"{}\"", &hash.to_hex()[..32]))
                    .expect("hex is a header value")
            })
            .clone()
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("../../web/dist/index.html"),
    "text/html; charset=utf-8",
);
static APP_JS: Asset = Asset::new(
    include_bytes!("../../web/dist/app.js"),
    "text/javascript; charset=utf-8",
);
static APP_CSS: Asset = Asset::new(
    include_bytes!("../../web/dist/app.css"),
    "text/css; charset=utf-8",
);

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(asset: &'static Asset, request: &HeaderMap) -> Response {
    let etag = asset.etag();
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, etag.clone());
    // Revalidated on every load: a new icnd serves its own app at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.bytes).into_response()
}

/// `/`, `/app.js`, `/app.css`.
pub(crate) fn routes() -> Router<Gateway> {
    Router::new()
        .route("/", get(|h: HeaderMap| async move { serve(&INDEX, &h) }))
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { serve(&APP_JS, &h) }),
        )
        .route(
            "/app.css",
            get(|h: HeaderMap| async move { serve(&APP_CSS, &h) }),
        )
}
