//! `cairn gateway`: the S3 gateway over the account of a config, and its
//! access keys (`cairn gateway keys …`), kept in `gateway-keys.toml`
//! (mode 0600) next to the config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_client::Client;
use cairn_s3_gateway::{Gateway, Keys, keys, server};

/// How often abandoned multipart uploads are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(3600);

/// Where the keys of the config at `config` live (unless given).
pub fn keys_path(config: &Path, flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| config.parent().unwrap_or(Path::new(".")).join("gateway-keys.toml"))
}

/// How a gateway is served.
#[derive(Debug, Clone)]
pub struct Serve {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The keys file.
    pub keys: PathBuf,
    /// TLS certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on a non-loopback address.
    pub insecure_http: bool,
    /// Prometheus metrics address.
    pub metrics: Option<SocketAddr>,
}

/// A gateway bound to its address, ready to run.
#[derive(Debug)]
pub struct Bound {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    gateway: Gateway,
    metrics: Option<tokio::net::TcpListener>,
}

/// Binds the gateway's sockets (so a caller can print the address first).
pub async fn bind(client: Arc<Client>, opts: &Serve) -> anyhow::Result<Bound> {
    let tls = match &opts.tls {
        Some((cert, key)) => Some(server::tls_config(cert, key)?),
        None => None,
    };
    server::check_exposure(opts.listen, tls.is_some(), opts.insecure_http)?;
    let keys = Arc::new(Keys::from_file(opts.keys.clone())?);
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| cairn_s3_gateway::Error::Listen { addr: opts.listen, source })?;
    let addr = listener.local_addr()?;
    let metrics = match opts.metrics {
        Some(m) => Some(tokio::net::TcpListener::bind(m).await.with_context(|| format!("cannot listen on {m}"))?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    Ok(Bound { addr, scheme, listener, tls, gateway: Gateway::new(client, keys), metrics })
}

impl Bound {
    /// The metrics address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// Serves until `stop`, expiring abandoned uploads hourly.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let service = server::service(self.gateway.clone());
        let gw = self.gateway.clone();
        let expiry = async move {
            loop {
                let n = gw.expire_uploads().await;
                if n > 0 {
                    tracing::info!(uploads = n, "aborted abandoned multipart uploads");
                }
                tokio::time::sleep(EXPIRY_INTERVAL).await;
            }
        };
        let metrics = async move {
            match self.metrics {
                Some(l) => cairn_s3_gateway::metrics::serve(l).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = server::serve(self.listener, service, self.tls, stop) => {}
            () = expiry => {}
            () = metrics => {}
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut t) => {
                t.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Makes sure the keys file has a key; returns the first one (for devnet).
pub fn ensure_key(path: &Path, name: &str) -> anyhow::Result<keys::AccessKey> {
    if let Some(k) = keys::load(path)?.into_iter().next() {
        return Ok(k);
    }
    Ok(keys::add(path, name, false, None)?)
}
