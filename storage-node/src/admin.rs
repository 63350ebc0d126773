//! The admin HTTP listener: `/health`, `/metrics`, and a dashboard at `/`.
//! Plain HTML, no front-end build step.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use cairn_net::NetHandle;
use cairn_net::store::RecordBackend;
use tokio_util::sync::CancellationToken;

use crate::leaving::Leaving;
use crate::metrics::Metrics;
use crate::store::ShardStore;
use crate::usage::{self, Book};

/// What the admin pages read.
#[derive(Debug)]
pub struct AdminState {
    /// The store, for capacity figures.
    pub store: Arc<ShardStore>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The network, for peers.
    pub net: NetHandle,
    /// When the node started.
    pub started: Instant,
    /// Addresses peers can reach this node at.
    pub addrs: Vec<String>,
    /// Whether the node is leaving the network.
    pub leaving: Arc<Leaving>,
    /// What each peer uses, and the node's history.
    pub usage: Arc<Book>,
    /// The region and zone the operator declared.
    pub region: (String, String),
}

/// Serves until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state);
    axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await
}

async fn health(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let st = s.store.stats();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"status":"ok","used":{},"capacity":{}}}"#, st.used, st.capacity),
    )
}

async fn metrics(State(s): State<Arc<AdminState>>) -> impl IntoResponse {
    let peers = s.net.connected_peers().await.map(|p| p.len()).unwrap_or(0);
    let mut body =
        s.metrics.render(&s.store.stats(), peers, s.store.count(), s.started.elapsed().as_secs(), s.leaving.until());
    body.push_str(&usage::render_metrics(&s.usage.lock()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

fn human(bytes: u64) -> String {
    cairn_proto::units::format_size(bytes)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn dashboard(State(s): State<Arc<AdminState>>) -> Html<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let st = s.store.stats();
    let peers = s.net.connected_peers().await.map(|p| p.len()).unwrap_or(0);
    let pct = if st.capacity == 0 { 0.0 } else { st.used as f64 * 100.0 / st.capacity as f64 };
    let up = s.started.elapsed().as_secs();
    let m = &s.metrics;
    let errors: String = m.errors().iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("<li>{k}: {n}</li>")).collect();
    let addrs: String = s.addrs.iter().map(|a| format!("<li><code>{}</code></li>", escape(a))).collect();
    let leaving = match s.leaving.until() {
        None => String::new(),
        Some(until) => {
            let start = s.leaving.shards_at_start().max(st.shards);
            let moved = if start == 0 { 100.0 } else { (start - st.shards) as f64 * 100.0 / start as f64 };
            let left = until.saturating_sub(crate::service::now_secs());
            format!(
                r#"<h2>Leaving the network</h2><div class="bar"><div class="fill" style="width:{moved:.1}%"></div></div>
<p>No new shards are accepted. {held} of {start} shards still held ({moved:.1} % moved away by repairers);
the node stops when it holds none, or in {lh}h {lm}m at the latest.</p>"#,
                held = st.shards,
                lh = left / 3600,
                lm = left / 60 % 60,
            )
        }
    };
    let (top, day, month, accounted) = {
        let l = s.usage.lock();
        (l.top(usage::TOP), l.day().to_vec(), l.month().to_vec(), l.len())
    };
    let charts = format!(
        "{}{}",
        crate::charts::chart("Space and traffic", "last 24 hours in 5-minute slots", &day, human),
        crate::charts::chart("Space and traffic", "last 30 days in daily slots", &month, human),
    );
    let top_rows: String = top
        .iter()
        .map(|(p, u)| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}·h</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&usage::peer_name(p)),
                human(u.stored),
                human(u.byte_seconds / 3600),
                human(u.received),
                human(u.sent),
                u.requests
            )
        })
        .collect();
    let region = match (s.region.0.as_str(), s.region.1.as_str()) {
        ("", _) => "No region declared (set <code>region</code> in config.toml).".to_owned(),
        (r, "") => format!("Region <b>{}</b>.", escape(r)),
        (r, z) => format!("Region <b>{}</b>, zone <b>{}</b>.", escape(r), escape(z)),
    };
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>cairn-node</title><style>body{{font:15px system-ui;margin:2em;max-width:52em}}td{{padding:.2em 1em}}
.bar{{background:#ddd;height:1em;width:30em}}.fill{{background:#2a7;height:1em}}</style></head><body>
<h1>cairn-node</h1><p>Node <code>{peer}</code>, up {h}h {mi}m {se}s, {peers} peers connected. {region}</p>
<h2>Space</h2><div class="bar"><div class="fill" style="width:{pct:.1}%"></div></div>
<p>{used} of {cap} used ({pct:.1} %), {shards} shards, {records} DHT records.</p>{leaving}
<h2>Traffic</h2><table>
<tr><td>shards stored</td><td>{puts}</td><td>bytes in</td><td>{bin}</td></tr>
<tr><td>gets served</td><td>{gets}</td><td>bytes out</td><td>{bout}</td></tr>
<tr><td>deletes</td><td>{dels}</td><td>proofs</td><td>{proofs}</td></tr>
<tr><td>streams open</td><td>{active}</td><td>leases expired</td><td>{expired}</td></tr>
<tr><td>leases renewed</td><td>{renewals}</td><td></td><td></td></tr></table>
<h2>History</h2>{charts}
<h2>Top peers</h2><p>{accounted} peers accounted; the {shown} that used the most (stored × time, then traffic).</p>
<table><tr><th>peer</th><th>stores</th><th>stored × time</th><th>received</th><th>sent</th><th>requests</th></tr>{top_rows}</table>
<h2>Refused requests</h2><ul>{errors}</ul>
<h2>Addresses</h2><ul>{addrs}</ul>
<p><a href="/metrics">/metrics</a> · <a href="/health">/health</a></p></body></html>"#,
        peer = s.net.local_peer_id(),
        h = up / 3600,
        mi = up / 60 % 60,
        se = up % 60,
        used = human(st.used),
        cap = human(st.capacity),
        shards = st.shards,
        records = s.store.count(),
        puts = m.puts.load(Relaxed),
        gets = m.gets.load(Relaxed),
        dels = m.deletes.load(Relaxed),
        proofs = m.proofs.load(Relaxed),
        active = m.active_streams.load(Relaxed),
        expired = m.expired.load(Relaxed),
        renewals = m.renewals.load(Relaxed),
        bin = human(m.bytes_in.load(Relaxed)),
        bout = human(m.bytes_out.load(Relaxed)),
        shown = top.len(),
        errors = if errors.is_empty() { "<li>none</li>".to_owned() } else { errors },
    ))
}
