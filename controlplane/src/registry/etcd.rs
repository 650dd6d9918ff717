//! [`Registry`] over etcd v3 (etcd-client), with optional TLS client certificates.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use super::{KeyValue, LeaseWatch, Listing, Registry, RegistryError, WatchEvent, WatchMessage};

/// How long one unary etcd request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a request is tried before its error is returned (pauses 0.1, 0.2, … s between
/// tries): reads on any failure, writes only when they never reached etcd.
const ATTEMPTS: u32 = 8;

/// Which failed attempts of a request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Any failure: reads are safe to repeat.
    Always,
    /// Only a failure to connect to the endpoint the request was sent to: the request never
    /// reached etcd, so repeating it cannot apply a write twice.
    Unsent,
}

/// Whether the request failed before it was sent: no connection to the chosen endpoint
/// (`tcp connect error`, as the transport reports a refused or unroutable connection).
fn never_sent(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("connect error"))
}

/// PEM files for TLS to etcd (flannel's `--etcd-cafile/--etcd-certfile/--etcd-keyfile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundle that signed the etcd server certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (needs `key_file` too).
    pub cert_file: Option<PathBuf>,
    /// Client private key.
    pub key_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether any TLS file is configured.
    pub fn is_enabled(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Where the registry lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs (`http://127.0.0.1:2379`, `https://…`); a bare `host:port` gets `http://` or,
    /// with TLS configured, `https://`.
    pub endpoints: Vec<String>,
    /// Key prefix, flannel's default `/coreos.com/network`.
    pub prefix: String,
    /// TLS material; all `None` for plain HTTP.
    pub tls: TlsFiles,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: crate::DEFAULT_PREFIX.into(),
            tls: TlsFiles::default(),
        }
    }
}

/// The etcd-backed registry. Cheap to clone (the gRPC channel is shared).
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
    prefix: String,
    target: String,
    tls: TlsUse,
}

/// How the client authenticates to etcd, for explaining connection failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsUse {
    /// Plain HTTP.
    Off,
    /// TLS without a client certificate.
    ServerOnly,
    /// TLS with a client certificate.
    ClientCert,
}

impl TlsUse {
    /// What to check when a request failed the way a TLS rejection shows up: a handshake or
    /// certificate error, or — etcd refusing a client certificate under TLS 1.3, where the
    /// server decides after the handshake — a connection closed, reset or broken right after it.
    fn hint(self, message: &str) -> Option<&'static str> {
        let m = message.to_ascii_lowercase();
        let tls_like = [
            "certificate",
            "alert",
            "handshake",
            "tls",
            "connection closed",
            "connection reset",
            "broken pipe",
        ]
        .iter()
        .any(|w| m.contains(w));
        match self {
            TlsUse::Off => None,
            _ if !tls_like => None,
            TlsUse::ServerOnly => Some(
                "TLS/certificate problem? No client certificate was given: an etcd that requires \
                 client certificates (--client-cert-auth) closes the connection; pass \
                 --etcd-certfile and --etcd-keyfile (LINEN_ETCD_CERTFILE, LINEN_ETCD_KEYFILE)",
            ),
            TlsUse::ClientCert => Some(
                "TLS/certificate problem? Check that the client certificate (--etcd-certfile) is \
                 signed by a CA etcd trusts (its --trusted-ca-file) and that --etcd-cafile holds \
                 the CA of etcd's server certificate, which must name the endpoint's address",
            ),
        }
    }
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn read_file(what: &str, path: &PathBuf) -> Result<Vec<u8>, RegistryError> {
    std::fs::read(path)
        .map_err(|e| RegistryError::Setup(format!("reading {what} {}: {e}", path.display())))
}

impl EtcdRegistry {
    /// Builds the client. The connection itself is made lazily, so this succeeds while etcd is
    /// down; the first request reports the outage.
    ///
    /// # Errors
    /// [`RegistryError::Setup`] for unreadable TLS files, a key without certificate or an invalid
    /// endpoint.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdRegistry, RegistryError> {
        let tls = opts.tls.is_enabled();
        let scheme = if tls { "https://" } else { "http://" };
        let endpoints: Vec<String> = opts
            .endpoints
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| if e.contains("://") { e.to_string() } else { format!("{scheme}{e}") })
            .collect();
        if endpoints.is_empty() {
            return Err(RegistryError::Setup("no etcd endpoints given".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
            .with_keep_alive_while_idle(true);
        if tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &opts.tls.ca_file {
                t = t.ca_certificate(Certificate::from_pem(read_file("etcd CA file", ca)?));
            }
            match (&opts.tls.cert_file, &opts.tls.key_file) {
                (Some(c), Some(k)) => {
                    t = t.identity(Identity::from_pem(
                        read_file("etcd client certificate", c)?,
                        read_file("etcd client key", k)?,
                    ));
                }
                (None, None) => {}
                _ => {
                    return Err(RegistryError::Setup(
                        "etcd client certificate and key must be given together".into(),
                    ))
                }
            }
            connect = connect.with_tls(t);
        }
        let target = endpoints.join(",");
        let client = Client::connect(&endpoints, Some(connect))
            .await
            .map_err(|e| RegistryError::Setup(format!("etcd endpoints {target}: {e}")))?;
        let prefix = opts.prefix.trim_end_matches('/').to_string();
        let tls = match (tls, opts.tls.cert_file.is_some()) {
            (false, _) => TlsUse::Off,
            (true, false) => TlsUse::ServerOnly,
            (true, true) => TlsUse::ClientCert,
        };
        Ok(EtcdRegistry { client, prefix, target, tls })
    }

    /// The underlying etcd-client handle (for tools and tests: compaction, status).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The configured prefix, without trailing slash.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn config_key(&self) -> String {
        format!("{}/config", self.prefix)
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn lease_key(&self, key: &str) -> String {
        format!("{}{key}", self.subnets_prefix())
    }

    fn err(&self, op: &'static str, e: impl std::fmt::Display) -> RegistryError {
        let mut message = e.to_string();
        if let Some(hint) = self.tls.hint(&message) {
            message = format!("{message} ({hint})");
        }
        RegistryError::Unavailable { op, target: self.target.clone(), message }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.err(op, e)),
            Err(_) => Err(self.err(op, format!("no answer within {REQUEST_TIMEOUT:?}"))),
        }
    }

    /// Runs a read up to [`ATTEMPTS`] times with a growing pause: with several endpoints, a
    /// request can land on a member that just died (the channel picks endpoints at random and
    /// may pick the dead one again before it notices); reads are safe to repeat.
    async fn read<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RegistryError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.request(op, Repeat::Always, f).await
    }

    /// Runs a write, repeating it (like [`EtcdRegistry::read`]) only when it never reached etcd:
    /// the channel keeps a dead member among its endpoints and picks it for new requests, which
    /// then fail to connect — with a member down, most writes would otherwise fail.
    async fn write<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RegistryError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.request(op, Repeat::Unsent, f).await
    }

    async fn request<T, F, Fut>(
        &self,
        op: &'static str,
        repeat: Repeat,
        mut f: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            let (error, again) =
                match tokio::time::timeout(REQUEST_TIMEOUT, f(self.client.clone())).await {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(e)) => {
                        let again = repeat == Repeat::Always || never_sent(&e);
                        (self.err(op, e), again)
                    }
                    Err(_) => (
                        self.err(op, format!("no answer within {REQUEST_TIMEOUT:?}")),
                        repeat == Repeat::Always,
                    ),
                };
            attempt += 1;
            if !again || attempt >= ATTEMPTS {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
    }

    fn to_kv(&self, kv: &etcd_client::KeyValue) -> Option<KeyValue> {
        let full = std::str::from_utf8(kv.key()).ok()?;
        let key = full.strip_prefix(&self.subnets_prefix())?;
        Some(KeyValue {
            key: key.to_string(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
            lease_id: kv.lease(),
        })
    }
}

impl Registry for EtcdRegistry {
    type Watch = EtcdWatch;

    async fn get_config(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        let key = self.config_key();
        let resp = self
            .read("read config", |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put_config(&self, value: Vec<u8>) -> Result<(), RegistryError> {
        let key = self.config_key();
        self.write("write config", |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    async fn list_leases(&self) -> Result<Listing, RegistryError> {
        let prefix = self.subnets_prefix();
        let resp = self
            .read("list leases", |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let leases = resp.kvs().iter().filter_map(|kv| self.to_kv(kv)).collect();
        Ok(Listing { revision, leases })
    }

    async fn current_revision(&self) -> Result<i64, RegistryError> {
        let prefix = self.subnets_prefix();
        let resp = self
            .read("read revision", |mut c| {
                let prefix = prefix.clone();
                async move {
                    c.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await
                }
            })
            .await?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn get_lease(&self, key: &str) -> Result<Option<KeyValue>, RegistryError> {
        let full = self.lease_key(key);
        let resp = self
            .read("read lease", |mut c| {
                let full = full.clone();
                async move { c.get(full, None).await }
            })
            .await?;
        Ok(resp.kvs().first().and_then(|kv| self.to_kv(kv)))
    }

    async fn create_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
    ) -> Result<bool, RegistryError> {
        let full = self.lease_key(key);
        let opts = (lease_id != 0).then(|| PutOptions::new().with_lease(lease_id));
        let txn = Txn::new()
            .when([Compare::version(full.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full, value, opts)]);
        let resp = self
            .write("create lease", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    async fn update_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
        expected_mod_revision: i64,
    ) -> Result<bool, RegistryError> {
        let full = self.lease_key(key);
        let opts = (lease_id != 0).then(|| PutOptions::new().with_lease(lease_id));
        let txn = Txn::new()
            .when([Compare::mod_revision(full.clone(), CompareOp::Equal, expected_mod_revision)])
            .and_then([TxnOp::put(full, value, opts)]);
        let resp = self
            .write("update lease", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded())
    }

    async fn delete_lease(&self, key: &str) -> Result<(), RegistryError> {
        let full = self.lease_key(key);
        self.write("delete lease", |mut c| {
            let full = full.clone();
            async move { c.delete(full, None).await }
        })
        .await?;
        Ok(())
    }

    async fn grant(&self, ttl: Duration) -> Result<i64, RegistryError> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let resp = self
            .write("grant TTL lease", |mut c| async move { c.lease_grant(secs, None).await })
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease_id: i64) -> Result<Option<Duration>, RegistryError> {
        let (mut keeper, mut stream) = self
            .write("keep-alive", |mut c| async move { c.lease_keep_alive(lease_id).await })
            .await?;
        self.timed("keep-alive", keeper.keep_alive()).await?;
        match self.timed("keep-alive", stream.message()).await? {
            Some(resp) if resp.ttl() > 0 => {
                Ok(Some(Duration::from_secs(resp.ttl().unsigned_abs())))
            }
            Some(_) => Ok(None),
            None => Err(self.err("keep-alive", "stream closed without an answer")),
        }
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), RegistryError> {
        let mut c = self.client.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, c.lease_revoke(lease_id)).await {
            Ok(Ok(_)) => Ok(()),
            // "requested lease not found": already gone, which is what we wanted.
            Ok(Err(e)) if e.to_string().contains("not found") => Ok(()),
            Ok(Err(e)) => Err(self.err("revoke TTL lease", e)),
            Err(_) => Err(self.err("revoke TTL lease", "timed out")),
        }
    }

    async fn watch_leases(&self, from_revision: i64) -> Result<EtcdWatch, RegistryError> {
        let prefix = self.subnets_prefix();
        let opts = WatchOptions::new().with_prefix().with_start_revision(from_revision);
        let stream = self
            .write("watch leases", |mut c| {
                let (prefix, opts) = (prefix.clone(), opts.clone());
                async move { c.watch(prefix, Some(opts)).await }
            })
            .await?;
        Ok(EtcdWatch { stream, registry: self.clone() })
    }

    fn target(&self) -> String {
        self.target.clone()
    }
}

/// A watch over `<prefix>/subnets/` on etcd.
pub struct EtcdWatch {
    stream: WatchStream,
    registry: EtcdRegistry,
}

impl LeaseWatch for EtcdWatch {
    async fn next(&mut self) -> Result<WatchMessage, RegistryError> {
        loop {
            let closed = |message: String| RegistryError::WatchClosed {
                target: self.registry.target.clone(),
                message,
            };
            let resp = match self.stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(closed("stream ended".into())),
                Err(e) => return Err(closed(e.to_string())),
            };
            if resp.compact_revision() > 0 {
                return Ok(WatchMessage::Compacted { compact_revision: resp.compact_revision() });
            }
            if resp.canceled() {
                return Err(closed(format!("watch canceled by server: {}", resp.cancel_reason())));
            }
            // The creation acknowledgement carries no events and no news.
            if resp.created() && resp.events().is_empty() {
                continue;
            }
            // Resume points come from the events themselves (a header may run ahead of events
            // still queued for this watcher); an empty progress message uses the header.
            let mut revision = 0;
            let mut events = Vec::with_capacity(resp.events().len());
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                revision = revision.max(kv.mod_revision());
                let Some(kv) = self.registry.to_kv(kv) else { continue };
                events.push(match ev.event_type() {
                    EventType::Put => WatchEvent::Put(kv),
                    EventType::Delete => {
                        WatchEvent::Delete { key: kv.key, mod_revision: kv.mod_revision }
                    }
                });
            }
            if resp.events().is_empty() {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            return Ok(WatchMessage::Events { revision, events });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_get_a_hint_naming_the_certificate_flags() {
        let closed = r#"grpc request error: code: 'The operation was cancelled', message: "operation was canceled", source: tonic::transport::Error(Transport, hyper::Error(Canceled, "connection closed"))"#;
        let alert = r#"grpc request error: code: 'Unknown error', message: "transport error", source: tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: InvalidData, error: "received fatal alert: BadCertificate" }))"#;
        let refused = r#"grpc request error: code: 'The service is currently unavailable', message: "tcp connect error""#;
        let no_cert = TlsUse::ServerOnly.hint(closed).expect("hint");
        assert!(no_cert.contains("--etcd-certfile") && no_cert.contains("client certificate"));
        let bad_cert = TlsUse::ClientCert.hint(alert).expect("hint");
        assert!(bad_cert.contains("--trusted-ca-file") && bad_cert.contains("--etcd-cafile"));
        let broken = r#"grpc request error: code: 'Unknown error', message: "transport error", source: tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: BrokenPipe, error: "stream closed because of a broken pipe" }))"#;
        assert_eq!(TlsUse::ClientCert.hint(broken), Some(bad_cert));
        assert_eq!(TlsUse::ClientCert.hint(refused), None);
        assert_eq!(TlsUse::Off.hint(alert), None);
    }
}
