//! The HTTP side: accepting connections (TCP_NODELAY on each, so small
//! responses do not wait for a delayed ACK), optional TLS, limits on
//! headers and idle connections, one log line per request, and a graceful
//! stop that lets requests in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::access::{S3Access, S3AccessContext};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;

use crate::error::Error;
use crate::gateway::Gateway;

/// Time a client has to send a request's headers (and an idle keep-alive
/// connection is closed after).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head accepted (hyper's buffer).
const MAX_HEAD: usize = 64 * 1024;
/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);
/// Longest presigned URL validity (AWS's 7 days).
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

/// Requires a signature, and refuses presigned URLs valid for longer than
/// AWS allows (s3s 0.14.1 does not check this).
#[derive(Debug)]
struct Access;

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "a signed request is required"));
        }
        let expires = cx.uri().query().into_iter().flat_map(|q| q.split('&')).find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            k.eq_ignore_ascii_case("X-Amz-Expires").then(|| v.parse::<u64>().ok())
        });
        match expires {
            Some(Some(s)) if s <= MAX_PRESIGN_SECS => Ok(()),
            Some(_) => Err(s3_error!(AuthorizationQueryParametersError, "X-Amz-Expires must be 1 to 604800 seconds")),
            None => Ok(()),
        }
    }
}

/// The HTTP service of a gateway.
pub fn service(gateway: Gateway) -> S3Service {
    let keys = Arc::clone(&gateway.keys);
    let mut b = S3ServiceBuilder::new(gateway);
    b.set_auth(KeysAuth(keys));
    b.set_access(Access);
    b.build()
}

/// The keys as s3s's authenticator.
#[derive(Debug)]
struct KeysAuth(Arc<crate::keys::Keys>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for KeysAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        self.0.get_secret_key(access_key).await
    }
}

/// Loads a TLS certificate chain and key (PEM).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| Error::Tls(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Checks that serving `addr` this way is safe: loopback, TLS, or the
/// operator said plain HTTP is fine.
pub fn check_exposure(addr: SocketAddr, tls: bool, insecure_http: bool) -> Result<(), Error> {
    if addr.ip().is_loopback() || tls || insecure_http { Ok(()) } else { Err(Error::Insecure(addr)) }
}

/// Serves `service` on `listener` until `stop` resolves, then lets
/// requests in flight finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    service: S3Service,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(stop);
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let svc = service.clone();
        let handler = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let svc = svc.clone();
            async move { logged(&svc, req).await }
        });
        let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD);
        match &acceptor {
            None => {
                let conn = http.serve_connection(TokioIo::new(socket), handler).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(socket)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = http.serve_connection(TokioIo::new(tls), handler).into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after 30 s; stopping anyway");
    }
}

/// Calls the service and logs one line: method, bucket, status, bytes, ms
/// (the key only at debug level).
async fn logged(svc: &S3Service, req: http::Request<Incoming>) -> Result<s3s::HttpResponse, s3s::HttpError> {
    let t0 = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bucket = path.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    let bytes_in = content_length(req.headers());
    let resp = svc.call(req.map(s3s::Body::from)).await;
    let ms = t0.elapsed().as_millis() as u64;
    match &resp {
        Ok(r) => {
            let status = r.status().as_u16();
            let bytes_out = content_length(r.headers());
            tracing::info!(%method, bucket, status, bytes_in, bytes_out, ms, "request");
            tracing::debug!(%method, path, status, "request path");
            crate::metrics::record(method.as_str(), status, bytes_in, bytes_out, ms);
        }
        Err(e) => {
            tracing::info!(%method, bucket, error = ?e, ms, "request failed");
            crate::metrics::record(method.as_str(), 500, bytes_in, 0, ms);
        }
    }
    resp
}

fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_be_served_in_the_clear_without_consent() {
        let lo: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        assert!(check_exposure(lo, false, false).is_ok());
        assert!(matches!(check_exposure(any, false, false), Err(Error::Insecure(_))));
        assert!(check_exposure(any, true, false).is_ok());
        assert!(check_exposure(any, false, true).is_ok());
    }
}
