//! `linenctl stats|routes|status`: read one node's local API (see [`crate::metrics`]) and print
//! it as tables, or as the API's JSON with `--json`.
//!
//! Each request is one HTTP/1.1 GET on its own plain-TCP connection, through hyper's client,
//! with a timeout over the whole exchange and a cap on the answer's size. It never writes
//! anything to the node.

use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::header::{ACCEPT, CONNECTION, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;

use crate::metrics::{RoutesReport, StatsReport, StatusReport};

/// Default of `--api`.
pub const DEFAULT_API: &str = "http://127.0.0.1:9472";

/// Largest answer the client accepts (10,000 routes are about 1 MiB).
pub const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Time for connecting, sending and reading one answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Flags shared by the node API subcommands.
#[derive(Args, Debug, Clone)]
pub struct NodeApiArgs {
    /// The node's local API (linend --metrics-addr), as http://HOST:PORT.
    #[arg(long, env = "LINEN_API", default_value = DEFAULT_API)]
    pub api: String,
    /// Print the API's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// The `host:port` to connect to for `--api http://host[:port][/]` (port 80 when absent).
fn authority(api: &str) -> Result<String, String> {
    let uri: Uri = api.parse().map_err(|_| {
        format!("--api {api:?}: expected http://HOST:PORT (the node API has no TLS)")
    })?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--api {api:?}: expected http://HOST:PORT (the node API has no TLS)"));
    }
    let Some(auth) = uri.authority().filter(|a| !a.as_str().contains('@')) else {
        return Err(format!("--api {api:?}: expected http://HOST:PORT with no path"));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("--api {api:?}: expected http://HOST:PORT with no path"));
    }
    // `host()` keeps an IPv6 literal's brackets, so the result is always connectable.
    Ok(format!("{}:{}", auth.host(), auth.port_u16().unwrap_or(80)))
}

/// Why one exchange failed: the node could not be reached, or it answered something unusable.
enum Failure {
    Unreachable(String),
    Answer(String),
}

/// GETs `path` from the node API; returns the status code and body.
///
/// # Errors
/// A bad `--api`, a node that does not answer in [`TIMEOUT`], or an answer that is not HTTP.
pub async fn get(api: &str, path: &str) -> Result<(u16, String), String> {
    let host = authority(api)?;
    match tokio::time::timeout(TIMEOUT, exchange(&host, path)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(Failure::Unreachable(e))) => Err(format!(
            "node API at {api} unreachable: {e}; is linend running with --metrics-addr {host}?"
        )),
        Ok(Err(Failure::Answer(e))) => Err(format!("node API at {api}: {e}")),
        Err(_) => Err(format!("node API at {api} did not answer within {TIMEOUT:?}")),
    }
}

/// One GET on a fresh connection to `host`.
async fn exchange(host: &str, path: &str) -> Result<(u16, String), Failure> {
    let stream = TcpStream::connect(host).await.map_err(|e| Failure::Unreachable(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Unreachable(with_causes(&e)))?;
    // The connection does the I/O; it ends when the answer has been read (or fails with it).
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(HOST, host)
        .header(ACCEPT, "application/json")
        .header(CONNECTION, "close")
        .body(String::new())
        .map_err(|e| Failure::Answer(e.to_string()))?;
    let answer = sender.send_request(request).await.map_err(|e| {
        if e.is_parse() || e.is_parse_status() {
            Failure::Answer(format!("the answer is not HTTP: {}", with_causes(&e)))
        } else {
            Failure::Unreachable(with_causes(&e))
        }
    })?;
    let status = answer.status().as_u16();
    let body = Limited::new(answer.into_body(), MAX_ANSWER).collect().await.map_err(|e| {
        if e.is::<LengthLimitError>() {
            Failure::Answer(format!("answer larger than {MAX_ANSWER} bytes"))
        } else {
            Failure::Answer(format!("answer cut short: {}", with_causes(e.as_ref())))
        }
    })?;
    let body = String::from_utf8(body.to_bytes().to_vec())
        .map_err(|_| Failure::Answer("the answer body is not UTF-8".to_string()))?;
    Ok((status, body))
}

/// An error and its causes, `outer: inner: ...` (hyper's errors keep the I/O reason in a cause).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// GETs `path` and decodes a 200 answer; any other status becomes an error carrying its body.
async fn get_json<T: DeserializeOwned>(api: &str, path: &str) -> Result<(T, String), String> {
    let (status, body) = get(api, path).await?;
    if status != 200 {
        return Err(format!("node API at {api}{path}: HTTP {status}: {}", body.trim()));
    }
    let value = serde_json::from_str(&body)
        .map_err(|e| format!("node API at {api}{path}: unexpected answer: {e}"))?;
    Ok((value, body))
}

/// `linenctl stats`.
///
/// # Errors
/// See [`get`]; also a non-200 answer.
pub async fn stats(args: &NodeApiArgs) -> Result<String, String> {
    let (report, body) = get_json::<StatsReport>(&args.api, "/v1/stats").await?;
    Ok(if args.json { body + "\n" } else { format_stats(&report) })
}

/// `linenctl routes`.
///
/// # Errors
/// See [`stats`].
pub async fn routes(args: &NodeApiArgs) -> Result<String, String> {
    let (report, body) = get_json::<RoutesReport>(&args.api, "/v1/routes").await?;
    Ok(if args.json { body + "\n" } else { format_routes(&report) })
}

/// `linenctl status`.
///
/// # Errors
/// See [`stats`].
pub async fn status(args: &NodeApiArgs) -> Result<String, String> {
    let (status, status_body) = get_json::<StatusReport>(&args.api, "/v1/status").await?;
    let (stats, stats_body) = get_json::<StatsReport>(&args.api, "/v1/stats").await?;
    Ok(if args.json {
        format!("{{\"status\":{status_body},\"stats\":{stats_body}}}\n")
    } else {
        format_status(&status, &stats)
    })
}

/// Non-zero drop reasons, largest first, as `reason n, reason n`; `none` without drops.
fn drop_summary(c: &crate::metrics::Counters) -> String {
    let mut nonzero: Vec<_> = c.drops.iter().filter(|(_, n)| **n > 0).collect();
    nonzero.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if nonzero.is_empty() {
        return "none".to_string();
    }
    nonzero.iter().map(|(r, n)| format!("{r} {n}")).collect::<Vec<_>>().join(", ")
}

/// The human `stats` table.
pub fn format_stats(r: &StatsReport) -> String {
    let mut out = format!(
        "datapath: {}, {} worker(s)\n",
        r.datapath.as_deref().unwrap_or("none"),
        r.workers.len()
    );
    out += &format!(
        "{:<6} {:<16} {:>14} {:>14} {:>12} {:>10} {:>12}\n",
        "WORKER", "NAME", "RX", "TX", "TO_KERNEL", "REPLIES", "DROPS"
    );
    let row = |id: &str, name: &str, c: &crate::metrics::Counters| {
        format!(
            "{:<6} {:<16} {:>14} {:>14} {:>12} {:>10} {:>12}\n",
            id, name, c.rx, c.tx, c.to_kernel, c.replies, c.drops_total
        )
    };
    for w in &r.workers {
        out += &row(&w.worker.to_string(), &w.name, &w.counters);
    }
    if r.workers.len() > 1 {
        out += &row("all", "", &r.total);
    }
    out += &format!("drops by reason: {}\n", drop_summary(&r.total));
    for w in &r.workers {
        if let Some(io) = &w.io {
            if io.io_errors + io.tx_failed + io.rx_oversize + io.kernel_unsupported > 0 {
                out += &format!(
                    "worker {} io: errors {} tx_failed {} rx_oversize {} kernel_unsupported {}\n",
                    w.worker, io.io_errors, io.tx_failed, io.rx_oversize, io.kernel_unsupported
                );
            }
        }
    }
    out
}

/// The human `routes` table.
pub fn format_routes(r: &RoutesReport) -> String {
    let vtep_width = r.routes.iter().map(|x| x.vtep.to_string().len()).max().unwrap_or(0).max(15);
    let mut out = format!("{:<20} {:<vtep_width$} VTEP MAC\n", "SUBNET", "VTEP");
    for route in &r.routes {
        out += &format!(
            "{:<20} {:<vtep_width$} {}\n",
            route.subnet.to_string(),
            route.vtep.to_string(),
            route.vtep_mac
        );
    }
    out += &format!("{} route(s), {}", r.count, if r.synced { "synced" } else { "NOT synced" });
    if let Some(rev) = r.watch_revision {
        out += &format!(", etcd revision {rev}");
    }
    out.push('\n');
    out
}

/// `1d2h`, `3h4m`, `5m6s`, `7s`.
fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// The human `status` screen.
pub fn format_status(st: &StatusReport, stats: &StatsReport) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out += &format!("{k:<10} {v}\n");
    line(
        "node:",
        if st.ready {
            "ready".to_string()
        } else {
            format!("NOT READY: {}", st.not_ready.join("; "))
        },
    );
    line(
        "lease:",
        match &st.lease {
            None => "none".to_string(),
            Some(l) => match l.expires_in_s {
                None => format!("{} (static, no expiry)", l.subnet),
                Some(s) if s > 0 => {
                    format!("{}, expires in {}", l.subnet, human_duration(s.unsigned_abs()))
                }
                Some(s) => {
                    format!("{}, EXPIRED {} ago", l.subnet, human_duration(s.unsigned_abs()))
                }
            },
        },
    );
    line(
        "datapath:",
        format!(
            "{}, {}, {} queue(s)/worker(s){}",
            st.datapath.as_deref().unwrap_or("none"),
            if st.datapath_up { "up" } else { "DOWN" },
            st.workers.len(),
            if st.workers.is_empty() {
                String::new()
            } else {
                format!(": {}", st.workers.join(" "))
            }
        ),
    );
    line(
        "routes:",
        format!("{}, {}", st.routes, if st.routes_synced { "synced" } else { "NOT synced" }),
    );
    line(
        "etcd:",
        match (st.etcd_connected, st.watch_revision) {
            (None, _) => "not used (static peers)".to_string(),
            (Some(true), Some(r)) => format!("connected, watch at revision {r}"),
            (Some(true), None) => "connected".to_string(),
            (Some(false), Some(r)) => format!("UNREACHABLE, last revision {r}"),
            (Some(false), None) => "UNREACHABLE".to_string(),
        },
    );
    let t = &stats.total;
    line(
        "traffic:",
        format!("rx {} tx {} to_kernel {} replies {}", t.rx, t.tx, t.to_kernel, t.replies),
    );
    line("drops:", format!("{} total: {}", t.drops_total, drop_summary(t)));
    line("uptime:", format!("{} (linend {})", human_duration(st.uptime_s), st.version));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_authority() {
        assert_eq!(authority("http://127.0.0.1:9472").unwrap(), "127.0.0.1:9472");
        assert_eq!(authority("http://127.0.0.1:9472/").unwrap(), "127.0.0.1:9472");
        assert_eq!(authority("http://[::1]:9472").unwrap(), "[::1]:9472");
        assert_eq!(authority("http://[::1]").unwrap(), "[::1]:80");
        assert_eq!(authority("http://node1").unwrap(), "node1:80");
        assert!(authority("https://127.0.0.1:9472").unwrap_err().contains("no TLS"));
        assert!(authority("127.0.0.1:9472").is_err());
        assert!(authority("http://127.0.0.1:9472/v1").is_err());
    }

    /// A node API stand-in on loopback that answers one connection with `answer` (after the
    /// request head arrived) and closes it; returns its `--api` URL.
    async fn answering(answer: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(answer).await;
        });
        api
    }

    #[tokio::test]
    async fn answers_from_the_node() {
        let api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(get(&api, "/v1/stats").await.unwrap(), (200, "{}".to_string()));
        let api = answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found").await;
        assert_eq!(get(&api, "/v1/x").await.unwrap(), (404, "not found".to_string()));
        let api =
            answering(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
                .await;
        assert_eq!(get(&api, "/v1/stats").await.unwrap(), (200, "{}".to_string()));
    }

    #[tokio::test]
    async fn broken_answers_are_errors() {
        let api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").await;
        let e = get(&api, "/v1/stats").await.unwrap_err();
        assert!(e.contains("cut short"), "{e}");
        let api = answering(b"SSH-2.0-OpenSSH\r\n").await;
        let e = get(&api, "/v1/stats").await.unwrap_err();
        assert!(e.contains("not HTTP"), "{e}");
        let api = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe").await;
        let e = get(&api, "/v1/stats").await.unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m5s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(86400 + 3600), "1d1h");
    }
}
