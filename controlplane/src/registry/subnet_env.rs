//! `subnet.env`, the file flannel leaves for CNI plugins (`/run/flannel/subnet.env`):
//!
//! ```text
//! FLANNEL_NETWORK=10.244.0.0/16
//! FLANNEL_SUBNET=10.244.8.1/24
//! FLANNEL_MTU=1450
//! FLANNEL_IPMASQ=false
//! ```
//!
//! `FLANNEL_SUBNET` is the gateway (first host address) with the subnet's length. The file is
//! written to a temporary file in the same directory and renamed over the old one, so a reader
//! sees either the old or the new content, never half of it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

/// The content of a subnet.env file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the cluster network.
    pub network: Ipv4Net,
    /// This node's subnet (written as `<gateway>/<len>`).
    pub subnet: Ipv4Net,
    /// `FLANNEL_MTU`: the overlay MTU.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`.
    pub ip_masq: bool,
}

/// Errors reading or writing subnet.env.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    /// I/O on the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The content is not a subnet.env.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl SubnetEnv {
    /// The gateway address of the subnet (`<subnet>.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1))
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            self.gateway(),
            self.subnet.prefix_len(),
            self.mtu,
            self.ip_masq
        )
    }

    /// Writes the file atomically (temp file in the same directory, fsync, rename), creating the
    /// directory if needed.
    ///
    /// # Errors
    /// [`SubnetEnvError::Io`] naming the path.
    pub fn write(&self, path: &Path) -> Result<(), SubnetEnvError> {
        let io = |source| SubnetEnvError::Io { path: path.to_path_buf(), source };
        replace_file(path, self.render().as_bytes(), true).map_err(io)
    }

    /// Reads a subnet.env (flannel's or linen's).
    ///
    /// # Errors
    /// [`SubnetEnvError::Io`] if unreadable, [`SubnetEnvError::Format`] if a field is missing or bad.
    pub fn read(path: &Path) -> Result<SubnetEnv, SubnetEnvError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| SubnetEnvError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text)
            .map_err(|reason| SubnetEnvError::Format { path: path.to_path_buf(), reason })
    }

    /// Parses the file's text.
    ///
    /// # Errors
    /// A message naming the missing or malformed variable.
    pub fn parse(text: &str) -> Result<SubnetEnv, String> {
        let mut vars = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.trim().split_once('=') {
                vars.insert(k.trim(), v.trim().trim_matches('"'));
            }
        }
        let get = |k: &str| vars.get(k).copied().ok_or_else(|| format!("{k} is missing"));
        let network: Ipv4Net = get("FLANNEL_NETWORK")?
            .parse()
            .map_err(|_| "FLANNEL_NETWORK is not an IPv4 CIDR".to_string())?;
        let subnet: Ipv4Net = get("FLANNEL_SUBNET")?
            .parse()
            .map_err(|_| "FLANNEL_SUBNET is not an IPv4 CIDR".to_string())?;
        let mtu =
            get("FLANNEL_MTU")?.parse().map_err(|_| "FLANNEL_MTU is not a number".to_string())?;
        let ip_masq = vars.get("FLANNEL_IPMASQ").is_some_and(|v| *v == "true");
        Ok(SubnetEnv { network: network.trunc(), subnet: subnet.trunc(), mtu, ip_masq })
    }
}

/// Replaces the file at `path` with `bytes` atomically: a temporary file in the same directory
/// (created if missing), then a rename, so a reader sees the old or the new file, never a part.
/// `durable` syncs the data before the rename, so that a crash cannot leave an empty file.
///
/// # Errors
/// Creating the directory, writing or renaming failed; the temporary file is removed.
pub fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_flannel_format_and_round_trips() {
        let env = SubnetEnv {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.8.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        assert_eq!(
            env.render(),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        env.write(&path).unwrap();
        assert_eq!(SubnetEnv::read(&path).unwrap(), env);
        // Overwrite leaves no temp file behind.
        env.write(&path).unwrap();
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(SubnetEnv::parse("FLANNEL_NETWORK=10.0.0.0/8\n").is_err());
        assert!(SubnetEnv::parse(
            "FLANNEL_NETWORK=x\nFLANNEL_SUBNET=10.0.1.1/24\nFLANNEL_MTU=1450\n"
        )
        .is_err());
        assert!(SubnetEnv::read(Path::new("/nonexistent/subnet.env")).is_err());
    }
}
