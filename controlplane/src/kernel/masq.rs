//! `linend --ip-masq`: source NAT for pod traffic that leaves the cluster network, with
//! flannel's exemptions, kept in linen's own nftables table.
//!
//! The rules are those flannel installs for `--ip-masq` (`FLANNEL-POSTRTG`), written for
//! nftables in the table `ip linen`, chain `postrouting` (a `nat` chain on the `postrouting` hook
//! at priority `srcnat`). For the cluster network `N` and this node's subnet `S`, in order:
//!
//! | rule | why |
//! |---|---|
//! | `meta mark & 0x4000 == 0x4000 return` | kube-proxy already marks what it masquerades; NAT it once only |
//! | `ip saddr S ip daddr N return` | our pods to any pod: no NAT inside the overlay |
//! | `ip saddr N ip daddr S return` | any pod to our pods: no NAT |
//! | `ip saddr != N ip daddr S return` | outside hosts to our pods keep their address |
//! | `ip saddr N ip daddr != 224.0.0.0/4 masquerade fully-random` | pods to the outside world (multicast exempt) |
//! | `ip saddr != N ip daddr N masquerade fully-random` | the node itself (or anything outside) to remote pods |
//!
//! `fully-random` (iptables' `--random-fully`) is used when the kernel takes it; otherwise the
//! rules fall back to a plain `masquerade` and say so once.
//!
//! Every change is one `nft -f -` transaction that creates the table if missing, deletes it and
//! writes it anew, so the table is never seen half-written and nothing outside it is touched
//! (no iptables, no other table). [`Masquerade`] keeps the listing `nft list table ip linen`
//! printed right after its last write; [`Masquerade::ensure`] compares the current listing with
//! it and writes the table again when it is missing or differs, or when the wanted rules changed
//! (another network or subnet). [`MasqKeeper`] runs that check every resync interval (flannel
//! uses 60 s) in a task and removes the table when it is shut down.
//!
//! All calls to `nft` go through the [`Nft`] trait, so the policy here is unit-tested with a
//! fake; [`NftCommand`] is the real one. This module never touches tables it did not create.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::metrics::NodeState;

/// The nftables family of linen's table.
pub const FAMILY: &str = "ip";
/// The name of linen's table (`table ip linen`).
pub const TABLE: &str = "linen";
/// The NAT chain in [`TABLE`], hooked on `postrouting`.
pub const CHAIN: &str = "postrouting";
/// The mark kube-proxy sets on packets it masquerades itself (`0x4000/0x4000`).
pub const KUBE_PROXY_MARK: u32 = 0x4000;
/// How often the rules are checked by default (flannel's resync period).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);

/// IPv4 multicast, never masqueraded.
fn multicast() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(224, 0, 0, 0), 4).expect("valid prefix length")
}

/// What the rules are rendered from: the cluster network and this node's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasqSpec {
    /// The cluster network (`Network` of the config, `FLANNEL_NETWORK`).
    pub network: Ipv4Net,
    /// This node's pod subnet.
    pub subnet: Ipv4Net,
}

impl MasqSpec {
    /// A spec; host bits of both prefixes are cleared.
    pub fn new(network: Ipv4Net, subnet: Ipv4Net) -> MasqSpec {
        MasqSpec { network: network.trunc(), subnet: subnet.trunc() }
    }
}

impl std::fmt::Display for MasqSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "network {}, subnet {}", self.network, self.subnet)
    }
}

/// The rules of the chain, in order, as nft statements (see the module docs).
pub fn rules(spec: &MasqSpec, random_fully: bool) -> Vec<String> {
    let (n, s) = (spec.network, spec.subnet);
    let masquerade = if random_fully { "masquerade fully-random" } else { "masquerade" };
    vec![
        format!("meta mark & {KUBE_PROXY_MARK:#010x} == {KUBE_PROXY_MARK:#010x} return"),
        format!("ip saddr {s} ip daddr {n} return"),
        format!("ip saddr {n} ip daddr {s} return"),
        format!("ip saddr != {n} ip daddr {s} return"),
        format!("ip saddr {n} ip daddr != {} {masquerade}", multicast()),
        format!("ip saddr != {n} ip daddr {n} {masquerade}"),
    ]
}

/// The table as an nft ruleset block.
pub fn render_table(spec: &MasqSpec, random_fully: bool) -> String {
    let mut out = format!(
        "table {FAMILY} {TABLE} {{\n\tchain {CHAIN} {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    for r in rules(spec, random_fully) {
        out.push_str("\t\t");
        out.push_str(&r);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

/// One atomic transaction that replaces linen's table with the rendered one (creating it first
/// makes the delete valid whether or not the table exists).
pub fn apply_script(spec: &MasqSpec, random_fully: bool) -> String {
    format!(
        "table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{}",
        render_table(spec, random_fully)
    )
}

/// One transaction that removes linen's table, whether or not it exists.
pub fn remove_script() -> String {
    format!("table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n")
}

/// A failed nftables operation.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    /// The `nft` binary is not installed.
    #[error(
        "`{program}` not found: masquerading needs the nft command (Debian/Ubuntu package nftables)"
    )]
    NftMissing {
        /// The program looked for.
        program: String,
    },
    /// `nft` could not be started or talked to.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `nft` refused a request.
    #[error("nft {what} failed: {stderr}")]
    Nft {
        /// What was asked, in operator terms (`"replace table ip linen"`).
        what: String,
        /// What nft said.
        stderr: String,
    },
    /// The blocking nft call was cancelled or panicked.
    #[error("the nft task did not finish: {0}")]
    Task(String),
}

/// The nftables calls linen makes: run a script, list linen's table. Tests fake it.
pub trait Nft {
    /// Runs `script` as one transaction (`nft -f -`).
    ///
    /// # Errors
    /// [`MasqError::Nft`] with nft's message when the transaction is refused (nothing of it is
    /// applied), or the program cannot be run.
    fn run(&mut self, what: &str, script: &str) -> Result<(), MasqError>;

    /// `nft list table ip linen`: the listing, or `None` when the table does not exist.
    ///
    /// # Errors
    /// A failure other than "no such table".
    fn list_table(&mut self) -> Result<Option<String>, MasqError>;
}

/// The real [`Nft`]: runs the `nft` binary (found on `PATH`) in the caller's network namespace.
#[derive(Debug, Clone)]
pub struct NftCommand {
    program: String,
}

impl Default for NftCommand {
    fn default() -> NftCommand {
        NftCommand { program: "nft".to_string() }
    }
}

impl NftCommand {
    /// Uses `program` instead of `nft` from `PATH`.
    pub fn with_program(program: impl Into<String>) -> NftCommand {
        NftCommand { program: program.into() }
    }

    fn spawn_error(&self, e: std::io::Error) -> MasqError {
        if e.kind() == std::io::ErrorKind::NotFound {
            MasqError::NftMissing { program: self.program.clone() }
        } else {
            MasqError::Spawn { program: self.program.clone(), source: e }
        }
    }
}

impl Nft for NftCommand {
    fn run(&mut self, what: &str, script: &str) -> Result<(), MasqError> {
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| self.spawn_error(e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(MasqError::Nft { what: what.to_string(), stderr: stderr_text(&out.stderr) })
        }
    }

    fn list_table(&mut self) -> Result<Option<String>, MasqError> {
        let out = Command::new(&self.program)
            .args(["list", "table", FAMILY, TABLE])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        if out.status.success() {
            return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        let stderr = stderr_text(&out.stderr);
        if stderr.contains("No such file or directory") {
            Ok(None)
        } else {
            Err(MasqError::Nft { what: format!("list table {FAMILY} {TABLE}"), stderr })
        }
    }
}

fn stderr_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        "(no message)".to_string()
    } else {
        text
    }
}

/// What [`Masquerade::ensure`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// The table is as written last time.
    Unchanged,
    /// The table was missing and was written again.
    RestoredMissing,
    /// The table differed from what was written (edited by hand or by another tool) and was
    /// written again.
    RestoredChanged,
    /// The wanted rules changed (network or subnet) and the table was rebuilt.
    Rebuilt {
        /// What the rules were rendered from before.
        old: MasqSpec,
    },
    /// Nothing was written yet; now it is.
    Installed,
}

/// linen's masquerade table: applies, checks and removes it through an [`Nft`].
#[derive(Debug)]
pub struct Masquerade<N: Nft = NftCommand> {
    nft: N,
    /// Whether `masquerade fully-random` works here; `None` until the first write tells.
    random_fully: Option<bool>,
    /// The spec last written and the listing nft printed right after.
    applied: Option<(MasqSpec, String)>,
}

impl<N: Nft> Masquerade<N> {
    /// A handle over `nft`; nothing is written yet.
    pub fn new(nft: N) -> Masquerade<N> {
        Masquerade { nft, random_fully: None, applied: None }
    }

    /// Checks that nft runs and can read the ruleset (so a missing binary or privilege is an
    /// error at start-up, not at the first write).
    ///
    /// # Errors
    /// [`MasqError::NftMissing`], or nft's own complaint.
    pub fn probe(&mut self) -> Result<(), MasqError> {
        self.nft.list_table().map(|_| ())
    }

    /// Whether the rules use `fully-random` (`None` before the first write).
    pub fn random_fully(&self) -> Option<bool> {
        self.random_fully
    }

    /// The spec last written.
    pub fn applied(&self) -> Option<MasqSpec> {
        self.applied.as_ref().map(|(s, _)| *s)
    }

    /// The [`Nft`] (tests inspect their fake through it).
    pub fn nft(&self) -> &N {
        &self.nft
    }

    /// Writes the table for `spec` in one transaction. The first write tries `fully-random` and
    /// falls back to a plain `masquerade` when nft or the kernel refuses it.
    ///
    /// # Errors
    /// The [`MasqError`] of the transaction (nothing of it is applied) or of the listing after it.
    pub fn apply(&mut self, spec: MasqSpec) -> Result<(), MasqError> {
        let what = format!("replace table {FAMILY} {TABLE}");
        match self.random_fully {
            Some(random_fully) => self.nft.run(&what, &apply_script(&spec, random_fully))?,
            None => match self.nft.run(&what, &apply_script(&spec, true)) {
                Ok(()) => self.random_fully = Some(true),
                Err(e @ (MasqError::NftMissing { .. } | MasqError::Spawn { .. })) => return Err(e),
                Err(first) => {
                    self.nft.run(&what, &apply_script(&spec, false))?;
                    warn!(error = %first, "masquerade fully-random is not supported here; using plain masquerade");
                    self.random_fully = Some(false);
                }
            },
        }
        let listing = self.nft.list_table()?.ok_or_else(|| MasqError::Nft {
            what: format!("list table {FAMILY} {TABLE}"),
            stderr: "the table is missing right after it was written".to_string(),
        })?;
        self.applied = Some((spec, listing));
        Ok(())
    }

    /// Makes the table match `spec`: writes it when nothing was written yet, when the spec
    /// changed, or when the table is missing or differs from the listing taken after the last
    /// write. Says what it did.
    ///
    /// # Errors
    /// The [`MasqError`] of listing or writing.
    pub fn ensure(&mut self, spec: MasqSpec) -> Result<Resync, MasqError> {
        let outcome = match &self.applied {
            None => Resync::Installed,
            Some((old, _)) if *old != spec => Resync::Rebuilt { old: *old },
            Some((_, listing)) => match self.nft.list_table()? {
                None => Resync::RestoredMissing,
                Some(now) if now != *listing => Resync::RestoredChanged,
                Some(_) => return Ok(Resync::Unchanged),
            },
        };
        self.apply(spec)?;
        Ok(outcome)
    }

    /// Removes a table left by an earlier run (one with `--ip-masq` that crashed, or before
    /// `--ip-masq` was turned off). Says whether there was one.
    ///
    /// # Errors
    /// The [`MasqError`] of listing or removing.
    pub fn remove_stale(&mut self) -> Result<bool, MasqError> {
        if self.nft.list_table()?.is_none() {
            return Ok(false);
        }
        self.remove()?;
        Ok(true)
    }

    /// Removes linen's table (fine when it is already gone).
    ///
    /// # Errors
    /// The [`MasqError`] of the transaction.
    pub fn remove(&mut self) -> Result<(), MasqError> {
        self.nft.run(&format!("delete table {FAMILY} {TABLE}"), &remove_script())?;
        self.applied = None;
        Ok(())
    }
}

/// A [`Masquerade`] shared with the blocking threads that run nft.
type Shared<N> = Arc<Mutex<Masquerade<N>>>;

/// Runs `f` on the masquerade on a blocking thread (nft is a child process; the async runtime
/// keeps serving the lease and the node API meanwhile).
async fn blocking<N, T>(
    masq: &Shared<N>,
    f: impl FnOnce(&mut Masquerade<N>) -> Result<T, MasqError> + Send + 'static,
) -> Result<T, MasqError>
where
    N: Nft + Send + 'static,
    T: Send + 'static,
{
    let masq = masq.clone();
    tokio::task::spawn_blocking(move || f(&mut masq.lock().unwrap_or_else(|e| e.into_inner())))
        .await
        .map_err(|e| MasqError::Task(e.to_string()))?
}

/// Keeps linen's masquerade table in place: writes it at start, checks it every resync
/// interval and whenever the spec changes, and removes it on [`MasqKeeper::shutdown`] (or leaves
/// it on [`MasqKeeper::leave`]).
#[derive(Debug)]
pub struct MasqKeeper<N: Nft + Send + 'static = NftCommand> {
    masq: Shared<N>,
    spec: watch::Sender<MasqSpec>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl<N: Nft + Send + 'static> MasqKeeper<N> {
    /// Writes the table for `spec` (returning the error if that fails) and starts the task that
    /// re-checks it every `resync`. Each write and check is recorded in `report` (the node API's
    /// `linen_ip_masq_*` metrics) when given.
    ///
    /// # Errors
    /// The [`MasqError`] of the first write.
    pub async fn start(
        masq: Masquerade<N>,
        spec: MasqSpec,
        resync: Duration,
        report: Option<NodeState>,
    ) -> Result<MasqKeeper<N>, MasqError> {
        let masq = Arc::new(Mutex::new(masq));
        let random_fully = blocking(&masq, move |m| {
            m.apply(spec)?;
            Ok(m.random_fully().unwrap_or(false))
        })
        .await?;
        if let Some(r) = &report {
            r.record_masq(true, false);
        }
        info!(
            table = %format!("{FAMILY} {TABLE}"),
            %spec,
            fully_random = random_fully,
            resync_s = resync.as_secs_f64(),
            "ip masquerade rules installed"
        );
        let (spec_tx, spec_rx) = watch::channel(spec);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(keep(masq.clone(), spec_rx, resync, stop_rx, report));
        Ok(MasqKeeper { masq, spec: spec_tx, stop: Some(stop_tx), task })
    }

    /// The spec the rules follow now.
    pub fn spec(&self) -> MasqSpec {
        *self.spec.borrow()
    }

    /// Follows a new network or subnet; the table is rebuilt at once when it differs.
    pub fn set_spec(&self, spec: MasqSpec) {
        self.handle().update(|s| *s = spec);
    }

    /// A handle other tasks use to update the network or the subnet.
    pub fn handle(&self) -> MasqHandle {
        MasqHandle(self.spec.clone())
    }

    /// Stops the checks and removes the table.
    ///
    /// # Errors
    /// The [`MasqError`] of the removal.
    pub async fn shutdown(mut self) -> Result<(), MasqError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        blocking(&self.masq, |m| m.remove()).await
    }

    /// Stops the checks and leaves the table in place, for the next process (which writes it
    /// again in one transaction, so masquerading never pauses).
    pub async fn leave(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Updates the spec a [`MasqKeeper`] follows; each setter changes one field, so a task following
/// the network config and one following the lease never undo each other.
#[derive(Debug, Clone)]
pub struct MasqHandle(watch::Sender<MasqSpec>);

impl MasqHandle {
    /// The spec the rules follow now.
    pub fn spec(&self) -> MasqSpec {
        *self.0.borrow()
    }

    /// Follows a new cluster network (from a changed network config).
    pub fn set_network(&self, network: Ipv4Net) {
        self.update(|s| s.network = network.trunc());
    }

    /// Follows a new node subnet (from a changed lease).
    pub fn set_subnet(&self, subnet: Ipv4Net) {
        self.update(|s| s.subnet = subnet.trunc());
    }

    fn update(&self, f: impl FnOnce(&mut MasqSpec)) {
        self.0.send_if_modified(|s| {
            let before = *s;
            f(s);
            *s != before
        });
    }
}

async fn keep<N: Nft + Send + 'static>(
    masq: Shared<N>,
    mut spec: watch::Receiver<MasqSpec>,
    resync: Duration,
    mut stop: oneshot::Receiver<()>,
    report: Option<NodeState>,
) {
    let mut every = tokio::time::interval(resync);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // the first tick is immediate; the table was just written
    loop {
        tokio::select! {
            _ = &mut stop => return,
            changed = spec.changed() => if changed.is_err() { return },
            _ = every.tick() => {}
        }
        let want = *spec.borrow_and_update();
        let table = format!("{FAMILY} {TABLE}");
        let result = blocking(&masq, move |m| m.ensure(want)).await;
        if let Some(r) = &report {
            let restored = matches!(result, Ok(Resync::RestoredMissing | Resync::RestoredChanged));
            r.record_masq(result.is_ok(), restored);
        }
        match result {
            Ok(Resync::Unchanged) => {}
            Ok(Resync::Installed) => info!(spec = %want, "ip masquerade rules installed"),
            Ok(Resync::RestoredMissing) => {
                warn!(%table, spec = %want, "the masquerade table was missing; restored it")
            }
            Ok(Resync::RestoredChanged) => warn!(
                %table,
                spec = %want,
                "the masquerade table was changed outside linend; rewrote it"
            ),
            Ok(Resync::Rebuilt { old }) => {
                info!(%old, new = %want, "network or subnet changed; masquerade rules rebuilt")
            }
            Err(e) => error!(
                "cannot check or restore the masquerade table: {e}; retrying in {}s",
                resync.as_secs()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: &str, subnet: &str) -> MasqSpec {
        MasqSpec::new(network.parse().unwrap(), subnet.parse().unwrap())
    }

    #[test]
    fn rules_are_flannels_in_order() {
        let s = spec("10.244.0.0/16", "10.244.1.0/24");
        assert_eq!(
            rules(&s, true),
            [
                "meta mark & 0x00004000 == 0x00004000 return",
                "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
                "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
                "ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
                "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
                "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
            ]
        );
        let plain = rules(&s, false);
        assert_eq!(plain[4], "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade");
        assert_eq!(plain[5], "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade");
    }

    #[test]
    fn spec_clears_host_bits() {
        let s = spec("10.244.3.7/16", "10.244.1.1/24");
        assert_eq!(s, spec("10.244.0.0/16", "10.244.1.0/24"));
        assert_eq!(s.to_string(), "network 10.244.0.0/16, subnet 10.244.1.0/24");
    }

    #[test]
    fn scripts_replace_and_remove_only_linens_table() {
        let s = spec("10.244.0.0/16", "10.244.1.0/24");
        let apply = apply_script(&s, true);
        let expected = "table ip linen\n\
             delete table ip linen\n\
             table ip linen {\n\
             \tchain postrouting {\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tmeta mark & 0x00004000 == 0x00004000 return\n\
             \t\tip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return\n\
             \t\tip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return\n\
             \t\tip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return\n\
             \t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\
             \t\tip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random\n\
             \t}\n\
             }\n";
        assert_eq!(apply, expected);
        assert_eq!(remove_script(), "table ip linen\ndelete table ip linen\n");
        for line in apply.lines().chain(remove_script().lines()) {
            let l = line.trim();
            if l.starts_with("table") || l.starts_with("delete") {
                assert!(l.contains("ip linen"), "{l}");
            }
        }
    }

    /// A fake nft: the "kernel" holds at most linen's table, as the text of its block.
    #[derive(Debug, Default)]
    struct FakeState {
        table: Option<String>,
        scripts: Vec<String>,
        reject_fully_random: bool,
        missing: bool,
        refuse_all: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct FakeNft(Arc<Mutex<FakeState>>);

    impl FakeNft {
        fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
            self.0.lock().unwrap()
        }
    }

    impl Nft for FakeNft {
        fn run(&mut self, what: &str, script: &str) -> Result<(), MasqError> {
            let mut st = self.state();
            if st.missing {
                return Err(MasqError::NftMissing { program: "nft".into() });
            }
            st.scripts.push(script.to_string());
            if st.refuse_all || (st.reject_fully_random && script.contains("fully-random")) {
                return Err(MasqError::Nft {
                    what: what.into(),
                    stderr: "Error: Could not process rule".into(),
                });
            }
            let prefix = remove_script();
            let rest = script.strip_prefix(&prefix).expect("every script starts by replacing");
            st.table = (!rest.is_empty()).then(|| rest.to_string());
            Ok(())
        }

        fn list_table(&mut self) -> Result<Option<String>, MasqError> {
            let st = self.state();
            if st.missing {
                return Err(MasqError::NftMissing { program: "nft".into() });
            }
            Ok(st.table.clone())
        }
    }

    #[test]
    fn ensure_restores_rebuilds_and_leaves_a_good_table_alone() {
        let fake = FakeNft::default();
        let mut m = Masquerade::new(fake.clone());
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        assert_eq!(m.ensure(a).unwrap(), Resync::Installed);
        assert_eq!(m.random_fully(), Some(true));
        assert_eq!(fake.state().table.as_deref(), Some(render_table(&a, true).as_str()));

        assert_eq!(m.ensure(a).unwrap(), Resync::Unchanged);
        assert_eq!(fake.state().scripts.len(), 1, "an unchanged table is not rewritten");

        fake.state().table = None;
        assert_eq!(m.ensure(a).unwrap(), Resync::RestoredMissing);
        assert!(fake.state().table.is_some());

        fake.state().table.as_mut().unwrap().push_str("# extra\n");
        assert_eq!(m.ensure(a).unwrap(), Resync::RestoredChanged);
        assert_eq!(fake.state().table.as_deref(), Some(render_table(&a, true).as_str()));

        let b = spec("10.0.0.0/8", "10.244.1.0/24");
        assert_eq!(m.ensure(b).unwrap(), Resync::Rebuilt { old: a });
        assert_eq!(m.applied(), Some(b));
        assert!(fake.state().table.as_deref().unwrap().contains("ip saddr 10.0.0.0/8"));

        m.remove().unwrap();
        assert_eq!(fake.state().table, None);
        assert_eq!(m.applied(), None);
        m.remove().unwrap();

        let mut other = Masquerade::new(fake.clone());
        assert!(!other.remove_stale().unwrap());
        fake.state().table = Some(render_table(&a, true));
        assert!(other.remove_stale().unwrap());
        assert_eq!(fake.state().table, None);
    }

    #[test]
    fn falls_back_to_plain_masquerade_once() {
        let fake = FakeNft::default();
        fake.state().reject_fully_random = true;
        let mut m = Masquerade::new(fake.clone());
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        m.apply(a).unwrap();
        assert_eq!(m.random_fully(), Some(false));
        assert_eq!(fake.state().table.as_deref(), Some(render_table(&a, false).as_str()));
        fake.state().table = None;
        fake.state().scripts.clear();
        assert_eq!(m.ensure(a).unwrap(), Resync::RestoredMissing);
        let scripts = fake.state().scripts.clone();
        assert_eq!(scripts.len(), 1, "no second try with fully-random: {scripts:?}");
        assert!(!scripts[0].contains("fully-random"));
    }

    #[test]
    fn errors_name_the_problem_and_keep_state() {
        let fake = FakeNft::default();
        fake.state().missing = true;
        let mut m = Masquerade::new(fake.clone());
        let err = m.probe().unwrap_err();
        assert!(err.to_string().contains("nftables"), "{err}");
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        assert!(matches!(m.apply(a), Err(MasqError::NftMissing { .. })));
        assert_eq!(m.random_fully(), None, "a missing binary says nothing about fully-random");

        let fake = FakeNft::default();
        let mut m = Masquerade::new(fake.clone());
        m.apply(a).unwrap();
        fake.state().refuse_all = true;
        fake.state().table = None;
        let err = m.ensure(a).unwrap_err();
        assert!(err.to_string().contains("replace table ip linen"), "{err}");
        assert_eq!(m.applied(), Some(a), "a failed write keeps the last good state");
        fake.state().refuse_all = false;
        assert_eq!(m.ensure(a).unwrap(), Resync::RestoredMissing);
    }

    #[test]
    fn missing_binary_is_reported_as_such() {
        let mut nft = NftCommand::with_program("/nonexistent/linen-test/nft");
        let err = nft.list_table().unwrap_err();
        assert!(matches!(err, MasqError::NftMissing { .. }), "{err}");
        let err = nft.run("replace table ip linen", "").unwrap_err();
        assert!(err.to_string().contains("package nftables"), "{err}");
    }

    #[tokio::test]
    async fn keeper_restores_follows_the_spec_and_removes_on_shutdown() {
        let fake = FakeNft::default();
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        let resync = Duration::from_millis(50);
        let keeper =
            MasqKeeper::start(Masquerade::new(fake.clone()), a, resync, None).await.unwrap();
        assert_eq!(fake.state().table.as_deref(), Some(render_table(&a, true).as_str()));
        assert_eq!(keeper.spec(), a);

        let wait = |want: Option<String>| {
            let fake = fake.clone();
            async move {
                for _ in 0..100 {
                    if fake.state().table == want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        fake.state().table = None;
        assert!(wait(Some(render_table(&a, true))).await, "table not restored");

        let b = spec("10.244.0.0/16", "10.244.7.0/24");
        keeper.handle().set_subnet("10.244.7.1/24".parse().unwrap());
        assert_eq!(keeper.spec(), b);
        assert!(wait(Some(render_table(&b, true))).await, "table not rebuilt");
        let c = spec("10.0.0.0/8", "10.244.7.0/24");
        keeper.handle().set_network("10.0.0.0/8".parse().unwrap());
        assert!(wait(Some(render_table(&c, true))).await, "table not rebuilt");
        let writes = fake.state().scripts.len();
        keeper.set_spec(c);
        keeper.handle().set_network("10.0.0.0/8".parse().unwrap());
        tokio::time::sleep(resync * 3).await;
        assert_eq!(fake.state().scripts.len(), writes, "an unchanged table was rewritten");

        keeper.shutdown().await.unwrap();
        assert_eq!(fake.state().table, None);
    }

    #[tokio::test]
    async fn keeper_start_fails_when_nft_is_missing() {
        let fake = FakeNft::default();
        fake.state().missing = true;
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        let err =
            MasqKeeper::start(Masquerade::new(fake), a, DEFAULT_RESYNC, None).await.unwrap_err();
        assert!(matches!(err, MasqError::NftMissing { .. }), "{err}");
    }

    /// The real nft in a scratch namespace: the rendered table is accepted as written, a table
    /// deleted by hand is restored, a rule added by hand is removed, and removal leaves nothing.
    #[test]
    fn real_nft_accepts_restores_and_removes() {
        let mut tb = linen_testbed::Testbed::new("masqu");
        let ns = tb.netns("n");
        let path = ns.path();
        let a = spec("10.244.0.0/16", "10.244.1.0/24");
        let run = move |f: Box<dyn FnOnce(&mut Masquerade) + Send>| {
            let path = path.clone();
            std::thread::spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let mut m = Masquerade::new(NftCommand::default());
                m.probe().expect("nft runs");
                f(&mut m);
            })
            .join()
            .expect("netns thread");
        };
        run(Box::new(move |m| {
            assert_eq!(m.ensure(a).unwrap(), Resync::Installed);
            assert_eq!(m.random_fully(), Some(true), "this kernel supports fully-random");
        }));
        let listing = ns.sh("nft list table ip linen");
        for r in rules(&a, true) {
            assert!(listing.contains(&r), "{r} missing from\n{listing}");
        }
        assert!(listing.contains("type nat hook postrouting priority srcnat"), "{listing}");

        run(Box::new(move |m| {
            m.apply(a).unwrap();
            assert_eq!(m.ensure(a).unwrap(), Resync::Unchanged);
            std::process::Command::new("nft")
                .args(["delete", "table", "ip", "linen"])
                .status()
                .unwrap();
            assert_eq!(m.ensure(a).unwrap(), Resync::RestoredMissing);
            std::process::Command::new("nft")
                .args([
                    "add",
                    "rule",
                    "ip",
                    "linen",
                    "postrouting",
                    "ip",
                    "daddr",
                    "1.2.3.4",
                    "accept",
                ])
                .status()
                .unwrap();
            assert_eq!(m.ensure(a).unwrap(), Resync::RestoredChanged);
            assert_eq!(m.ensure(a).unwrap(), Resync::Unchanged);
        }));
        let listing = ns.sh("nft list table ip linen");
        assert!(!listing.contains("1.2.3.4"), "{listing}");

        run(Box::new(|m| {
            m.remove().unwrap();
            m.remove().unwrap();
        }));
        assert!(!ns.sh("nft list tables").contains("linen"));
    }
}
