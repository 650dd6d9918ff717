//! `linenctl stats|routes|status`: read one node's local API (see [`crate::metrics`]) and print
//! it as tables, or as the API's JSON with `--json`.
//!
//! The client speaks just enough HTTP/1.1 for that API: one GET per connection over plain TCP,
//! with a timeout and a size cap. It never writes anything to the node.

use std::time::Duration;

use clap::Args;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::metrics::{RoutesReport, StatsReport, StatusReport};

/// Default of `--api`.
pub const DEFAULT_API: &str = "http://127.0.0.1:9472";

/// Largest answer the client accepts (10,000 routes are about 1 MiB).
pub const MAX_ANSWER: u64 = 64 * 1024 * 1024;

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

/// Splits `http://host:port[/]` into the `host:port` to connect to.
fn authority(api: &str) -> Result<String, String> {
    let rest = api.strip_prefix("http://").ok_or_else(|| {
        format!("--api {api:?}: expected http://HOST:PORT (the node API has no TLS)")
    })?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(format!("--api {api:?}: expected http://HOST:PORT with no path"));
    }
    // Bracketed IPv6 literals keep their colons inside the brackets.
    let has_port = match rest.rfind(']') {
        Some(i) => rest[i..].contains(':'),
        None => rest.contains(':'),
    };
    Ok(if has_port { rest.to_string() } else { format!("{rest}:80") })
}

/// GETs `path` from the node API; returns the status code and body.
///
/// # Errors
/// A bad `--api`, a node that does not answer in [`TIMEOUT`], or an answer that is not HTTP.
pub async fn get(api: &str, path: &str) -> Result<(u16, String), String> {
    let host = authority(api)?;
    let exchange = async {
        let mut stream = TcpStream::connect(&host).await.map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| e.to_string())?;
        if raw.len() as u64 > MAX_ANSWER {
            return Err(format!("answer larger than {MAX_ANSWER} bytes"));
        }
        Ok(raw)
    };
    let raw = match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => {
            return Err(format!(
                "node API at {api} unreachable: {e}; is linend running with --metrics-addr {host}?"
            ))
        }
        Err(_) => return Err(format!("node API at {api} did not answer within {TIMEOUT:?}")),
    };
    parse_answer(&raw).map_err(|e| format!("node API at {api}: {e}"))
}

fn parse_answer(raw: &[u8]) -> Result<(u16, String), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the answer head is not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut body = &raw[end + 4..];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("unsupported Transfer-Encoding {value:?}"));
        }
        if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| format!("bad Content-Length {value:?}"))?;
            if len > body.len() {
                return Err(format!("answer cut short ({} of {len} bytes)", body.len()));
            }
            body = &body[..len];
        }
    }
    let body = String::from_utf8(body.to_vec()).map_err(|_| "the answer body is not UTF-8")?;
    Ok((status, body))
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

    #[test]
    fn answer_parsing() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_answer(ok).unwrap(), (200, "{}".to_string()));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}";
        assert!(parse_answer(short).unwrap_err().contains("cut short"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(parse_answer(chunked).is_err());
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").unwrap_err().contains("status line"));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(65), "1m5s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(86400 + 3600), "1d1h");
    }
}
