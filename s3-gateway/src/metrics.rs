//! Prometheus metrics of the gateway: requests by method and status,
//! a latency histogram, bytes in and out. Served on an admin address of
//! its own (`cairn gateway --metrics ADDR`), never on the S3 port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// Upper bounds of the latency buckets, in milliseconds.
const BUCKETS_MS: [u64; 10] = [1, 5, 10, 25, 50, 100, 250, 1000, 5000, 30000];

static BYTES_IN: AtomicU64 = AtomicU64::new(0);
static BYTES_OUT: AtomicU64 = AtomicU64::new(0);
static LATENCY: [AtomicU64; 11] = [const { AtomicU64::new(0) }; 11];
static LATENCY_SUM_MS: AtomicU64 = AtomicU64::new(0);
static REQUESTS: Mutex<BTreeMap<(String, u16), u64>> = Mutex::new(BTreeMap::new());

/// Counts one request.
pub fn record(method: &str, status: u16, bytes_in: u64, bytes_out: u64, ms: u64) {
    BYTES_IN.fetch_add(bytes_in, Ordering::Relaxed);
    BYTES_OUT.fetch_add(bytes_out, Ordering::Relaxed);
    let i = BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS_MS.len());
    LATENCY[i].fetch_add(1, Ordering::Relaxed);
    LATENCY_SUM_MS.fetch_add(ms, Ordering::Relaxed);
    *REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).entry((method.to_string(), status)).or_default() += 1;
}

/// The metrics in Prometheus's text format.
pub fn render() -> String {
    let mut s = String::new();
    s.push_str("# TYPE cairn_s3_requests_total counter\n");
    let mut total = 0;
    for ((m, st), n) in REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(s, "cairn_s3_requests_total{{method=\"{m}\",status=\"{st}\"}} {n}");
        total += n;
    }
    s.push_str("# TYPE cairn_s3_request_seconds histogram\n");
    let mut cum = 0;
    for (i, b) in BUCKETS_MS.iter().enumerate() {
        cum += LATENCY[i].load(Ordering::Relaxed);
        let _ = writeln!(s, "cairn_s3_request_seconds_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1000.0);
    }
    cum += LATENCY[BUCKETS_MS.len()].load(Ordering::Relaxed);
    let _ = writeln!(s, "cairn_s3_request_seconds_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(s, "cairn_s3_request_seconds_sum {}", LATENCY_SUM_MS.load(Ordering::Relaxed) as f64 / 1000.0);
    let _ = writeln!(s, "cairn_s3_request_seconds_count {total}");
    s.push_str("# TYPE cairn_s3_received_bytes_total counter\n");
    let _ = writeln!(s, "cairn_s3_received_bytes_total {}", BYTES_IN.load(Ordering::Relaxed));
    s.push_str("# TYPE cairn_s3_sent_bytes_total counter\n");
    let _ = writeln!(s, "cairn_s3_sent_bytes_total {}", BYTES_OUT.load(Ordering::Relaxed));
    s
}

/// Serves `GET /metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            // Out of file descriptors and the like: wait, not spin.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let handler = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
            let (status, body) = if req.uri().path() == "/metrics" {
                (http::StatusCode::OK, render())
            } else {
                (http::StatusCode::NOT_FOUND, "see /metrics\n".to_string())
            };
            let mut resp = http::Response::new(s3s::Body::from(body));
            *resp.status_mut() = status;
            Ok::<_, std::convert::Infallible>(resp)
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(socket), handler);
            let _ = conn.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_show_in_the_text_format() {
        record("GET", 200, 0, 10, 3);
        let text = render();
        assert!(text.contains("cairn_s3_requests_total{method=\"GET\",status=\"200\"}"));
        assert!(text.contains("cairn_s3_request_seconds_bucket{le=\"+Inf\"}"));
    }
}
