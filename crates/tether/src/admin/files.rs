//! Serving the dashboard itself: the npm package's `ui/dist`, from a directory.

use std::convert::Infallible;
use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};

/// Serves the Admin UI's static files (the `ui/dist` directory of the
/// `@socket.io/admin-ui` npm package) under a path, every other request going to the
/// inner service. The dashboard's own page then asks for the server's URL; give it the
/// server's origin (the admin namespace is `/admin` by default).
///
/// ```no_run
/// use tower_layer::Layer as _;
/// # fn f(io: tether::Server) {
/// let app = tether::admin::AdminUiLayer::new("node_modules/@socket.io/admin-ui/ui/dist", "/admin")
///     .layer(io.service());
/// # let _ = app;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AdminUiLayer {
    dir: Arc<PathBuf>,
    mount: Arc<str>,
}

impl AdminUiLayer {
    /// Files from `dir`, under `mount` (such as `/admin`; a trailing `/` is ignored).
    pub fn new(dir: impl Into<PathBuf>, mount: &str) -> Self {
        let mount = mount.trim_end_matches('/');
        let mount = if mount.starts_with('/') {
            mount.to_owned()
        } else {
            format!("/{mount}")
        };
        AdminUiLayer {
            dir: Arc::new(dir.into()),
            mount: Arc::from(mount),
        }
    }
}

impl<S> tower_layer::Layer<S> for AdminUiLayer {
    type Service = AdminUiService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminUiService {
            dir: self.dir.clone(),
            mount: self.mount.clone(),
            inner,
        }
    }
}

/// The service made by [`AdminUiLayer`].
#[derive(Clone, Debug)]
pub struct AdminUiService<S> {
    dir: Arc<PathBuf>,
    mount: Arc<str>,
    inner: S,
}

/// The file a request path names under the mount, if any: `None` for a path outside
/// it, `Some(None)` for the mount itself without its trailing slash.
fn relative<'a>(mount: &str, path: &'a str) -> Option<Option<&'a str>> {
    let rest = path.strip_prefix(mount)?;
    if rest.is_empty() {
        return Some(None);
    }
    let rest = rest.strip_prefix('/')?;
    Some(Some(if rest.is_empty() { "index.html" } else { rest }))
}

/// Whether a relative path stays inside the directory.
fn is_safe(rel: &str) -> bool {
    !rel.contains(['\\', '%', '\0'])
        && Path::new(rel)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn mime(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

async fn serve_file(dir: &Path, rel: &str) -> Response<Full<Bytes>> {
    if !is_safe(rel) {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    match tokio::fs::read(dir.join(rel)).await {
        Ok(body) => {
            let mut res = Response::new(Full::new(Bytes::from(body)));
            let h = res.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(rel)));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            res
        }
        Err(e) => {
            tracing::debug!(file = rel, "admin UI: {e}");
            plain(StatusCode::NOT_FOUND, "not found\n")
        }
    }
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for AdminUiService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: From<Infallible>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<Either<Full<Bytes>, ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(rel) = relative(&self.mount, req.uri().path()) else {
            let fut = self.inner.call(req);
            return Box::pin(async move { Ok(fut.await?.map(Either::Right)) });
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Box::pin(async move { Ok(res.map(Either::Left)) });
        }
        let Some(rel) = rel.map(str::to_owned) else {
            // The page's links are relative: it must be read from `mount/`.
            let mut res = plain(StatusCode::MOVED_PERMANENTLY, "moved\n");
            if let Ok(v) = HeaderValue::from_str(&format!("{}/", self.mount)) {
                res.headers_mut().insert(header::LOCATION, v);
            }
            return Box::pin(async move { Ok(res.map(Either::Left)) });
        };
        let dir = self.dir.clone();
        Box::pin(async move { Ok(serve_file(&dir, &rel).await.map(Either::Left)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_mount() {
        assert_eq!(relative("/admin", "/admin"), Some(None));
        assert_eq!(relative("/admin", "/admin/"), Some(Some("index.html")));
        assert_eq!(
            relative("/admin", "/admin/js/app.js"),
            Some(Some("js/app.js"))
        );
        assert_eq!(relative("/admin", "/administrator"), None);
        assert_eq!(relative("/admin", "/socket.io/"), None);
    }

    #[test]
    fn no_way_out_of_the_directory() {
        assert!(is_safe("js/app.js"));
        assert!(!is_safe("../secret"));
        assert!(!is_safe("js/../../secret"));
        assert!(!is_safe("/etc/passwd"));
        assert!(!is_safe("%2e%2e/secret"));
        assert!(!is_safe("a\\b"));
    }

    #[tokio::test]
    async fn serves_a_file_with_its_type() {
        let dir = std::env::temp_dir().join(format!("tether-admin-ui-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("js")).unwrap();
        std::fs::write(dir.join("index.html"), "<html>").unwrap();
        std::fs::write(dir.join("js/app.js"), "1").unwrap();
        let res = serve_file(&dir, "index.html").await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let res = serve_file(&dir, "js/app.js").await;
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            serve_file(&dir, "nope.js").await.status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            serve_file(&dir, "../x").await.status(),
            StatusCode::NOT_FOUND
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
