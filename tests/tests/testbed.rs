//! The harness itself: namespaces come up, talk over a veth, and are gone after drop.
use linen_testbed::Testbed;

#[test]
fn two_hosts_ping_and_cleanup() {
    let names;
    {
        let mut tb = Testbed::new("tb");
        let a = tb.netns("a");
        let b = tb.netns("b");
        tb.veth(&a, "eth0", &b, "eth0");
        a.sh("ip addr add 192.168.250.1/24 dev eth0");
        b.sh("ip addr add 192.168.250.2/24 dev eth0");
        a.sh("ping -c 1 -W 2 192.168.250.2");
        names = tb.namespaces().iter().map(|n| n.name.clone()).collect::<Vec<_>>();
    }
    let list = linen_testbed::run("ip", &["netns", "list"]);
    for n in names {
        assert!(!list.contains(&n), "namespace {n} left behind");
    }
}
