//! Restarts, upgrades and crashes of linend under a service manager (root): linend runs as the
//! systemd unit runs it — `Type=notify` with a file-descriptor store — under the emulation in
//! `linen_testbed::service`, which speaks the same protocol, so these tests drive linend's real
//! hand-over path.
//!
//! Run alone with `cargo build --workspace --bins && cargo test -p linen-testbed --test node_restart`.

use std::net::Ipv4Addr;
use std::process::{Child, Stdio};
use std::time::Duration;

use linen_testbed::cluster::{Cluster, ClusterBuilder, Overlay};
use linen_testbed::Netns;

/// A ping running in the background: `ping -i 0.01 -c count` from `from` to `to`.
struct Pinger {
    child: Child,
    count: u32,
}

/// What a ping run reported.
#[derive(Debug, Clone, Copy)]
struct PingResult {
    transmitted: u32,
    received: u32,
    max_rtt_ms: f64,
}

impl Pinger {
    fn start(from: &Netns, to: Ipv4Addr, count: u32) -> Pinger {
        let child = from
            .command("ping")
            .args(["-n", "-q", "-i", "0.01", "-W", "2", "-c", &count.to_string()])
            .arg(to.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ping");
        Pinger { child, count }
    }

    fn finish(self) -> PingResult {
        let out = self.child.wait_with_output().expect("ping output");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let num = |after: &str| -> Option<u32> {
            let i = text.find(after)?;
            text[..i].split_whitespace().last()?.parse().ok()
        };
        let transmitted = num(" packets transmitted").unwrap_or(0);
        let received = num(" received").unwrap_or(0);
        let max_rtt_ms = text
            .lines()
            .find_map(|l| l.strip_prefix("rtt min/avg/max/mdev = "))
            .and_then(|v| v.split('/').nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        assert_eq!(transmitted, self.count, "ping did not run to the end: {text}");
        PingResult { transmitted, received, max_rtt_ms }
    }
}

fn build(b: ClusterBuilder) -> Cluster {
    b.build().unwrap_or_else(|e| panic!("cluster: {e}"))
}

#[test]
fn xdp_restart_smoke() {
    let c = build(
        ClusterBuilder::new("rsx").nodes(2, Overlay::linen("xdp")).service_manager(true),
    );
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    assert!(c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10)));
    eprintln!("stored: {:?}", c.stored(0));
    let p = Pinger::start(&a.pods[0], b.pod_ip(0), 300);
    std::thread::sleep(Duration::from_millis(1000));
    let took = c.restart_linend(0);
    let r = p.finish();
    eprintln!("restart took {took:?}; ping {r:?}");
    eprintln!("{}", a.linend.as_ref().unwrap().log_text());
    assert_eq!(r.received, r.transmitted);
}
