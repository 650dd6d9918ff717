//! Command-line pieces shared by `linend` and `linenctl`, so both spell etcd flags (and their
//! environment mirrors) the same way. Flatten [`EtcdFlags`] into a clap parser:
//!
//! ```
//! use clap::Parser;
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     etcd: linen_controlplane::cli::EtcdFlags,
//! }
//! let cli = Cli::parse_from(["linend", "--etcd-endpoints", "http://127.0.0.1:23790,http://127.0.0.1:23791"]);
//! assert_eq!(cli.etcd.options().endpoints.len(), 2);
//! ```

use std::path::PathBuf;

use crate::config::{ConfigError, NetworkConfig};
use crate::registry::{EtcdOptions, Registry, RegistryError, TlsFiles};

/// etcd connection flags, named as flannel's (`--etcd-endpoints`, `--etcd-prefix`,
/// `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`), each mirrored by `LINEN_ETCD_*`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct EtcdFlags {
    /// Comma-separated etcd client URLs.
    #[arg(
        long,
        env = "LINEN_ETCD_ENDPOINTS",
        default_value = "http://127.0.0.1:2379",
        value_delimiter = ',',
        global = true
    )]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix holding `config` and `subnets/`.
    #[arg(long, env = "LINEN_ETCD_PREFIX", default_value = crate::DEFAULT_PREFIX, global = true)]
    pub etcd_prefix: String,
    /// CA certificate file for etcd TLS.
    #[arg(long, env = "LINEN_ETCD_CAFILE", global = true)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate file for etcd TLS.
    #[arg(long, env = "LINEN_ETCD_CERTFILE", global = true)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key file for etcd TLS.
    #[arg(long, env = "LINEN_ETCD_KEYFILE", global = true)]
    pub etcd_keyfile: Option<PathBuf>,
}

impl EtcdFlags {
    /// The registry options these flags describe.
    pub fn options(&self) -> EtcdOptions {
        EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            tls: TlsFiles {
                ca_file: self.etcd_cafile.clone(),
                cert_file: self.etcd_certfile.clone(),
                key_file: self.etcd_keyfile.clone(),
            },
        }
    }
}

/// Why the network config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    /// etcd failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Nothing at `<prefix>/config`.
    #[error("no network config in etcd at {target}; write one with `linenctl config set --network CIDR` (or etcdctl put <prefix>/config '{{\"Network\":\"10.244.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}')")]
    Missing {
        /// Where we looked.
        target: String,
    },
    /// The stored config is unusable.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Reads, parses and validates `<prefix>/config`.
///
/// # Errors
/// [`LoadConfigError`]: etcd failure, missing config, or the config's own error.
pub async fn load_config<R: Registry>(registry: &R) -> Result<NetworkConfig, LoadConfigError> {
    let raw = registry
        .get_config()
        .await?
        .ok_or_else(|| LoadConfigError::Missing { target: registry.target() })?;
    Ok(NetworkConfig::from_json(&raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    #[tokio::test]
    async fn load_config_reports_missing_and_invalid() {
        let reg = MemoryRegistry::new();
        assert!(matches!(load_config(&reg).await, Err(LoadConfigError::Missing { .. })));
        reg.set_config(br#"{"Network":"10.0.0.0/16"}"#.to_vec());
        assert!(matches!(
            load_config(&reg).await,
            Err(LoadConfigError::Invalid(ConfigError::MissingBackend))
        ));
        reg.set_config(br#"{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan"}}"#.to_vec());
        assert!(load_config(&reg).await.is_ok());
    }
}
