//! CNI errors: a spec error code, a message an operator can act on, optional details.

use serde_json::json;

/// Error codes: the spec's well-known ones (below 100) and linen's own (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's `cniVersion` is not supported.
    IncompatibleVersion,
    /// 3: the container is unknown (not used by DEL, which always succeeds).
    UnknownContainer,
    /// 4: a required `CNI_*` variable is missing or invalid.
    InvalidEnv,
    /// 5: I/O failure (reading subnet.env, the IPAM store).
    IoFailure,
    /// 6: stdin could not be decoded.
    DecodeFailure,
    /// 7: the network configuration (or a requested fixed IP) is invalid.
    InvalidConfig,
    /// 11: a transient condition; try again later.
    TryAgainLater,
    /// 50: the plugin cannot serve ADD (no subnet for this node yet).
    NotAvailable,
    /// 51: not available, and existing pods may have limited connectivity.
    NotAvailableLimited,
    /// 100: a netlink request or namespace operation failed.
    Netlink,
    /// 101: the IPAM range is exhausted.
    RangeFull,
    /// 102: a requested fixed IP is already allocated to another container.
    IpTaken,
    /// 103: CHECK found the pod's networking different from what ADD set up.
    CheckFailed,
}

impl Code {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::IoFailure => 5,
            Code::DecodeFailure => 6,
            Code::InvalidConfig => 7,
            Code::TryAgainLater => 11,
            Code::NotAvailable => 50,
            Code::NotAvailableLimited => 51,
            Code::Netlink => 100,
            Code::RangeFull => 101,
            Code::IpTaken => 102,
            Code::CheckFailed => 103,
        }
    }
}

/// An error as the plugin reports it on stdout.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// The code.
    pub code: Code,
    /// What went wrong and, where there is one, the fix.
    pub msg: String,
    /// Underlying detail (an errno, a decoder's message).
    pub details: Option<String>,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: None }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = Some(details.into());
        self
    }

    /// The spec's error object, in `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code.number(),
            "msg": self.msg,
        });
        if let Some(d) = &self.details {
            v["details"] = json!(d);
        }
        v
    }
}

impl From<crate::netlink::NetlinkError> for CniError {
    fn from(e: crate::netlink::NetlinkError) -> CniError {
        CniError::new(Code::Netlink, e.what.to_string()).with_details(e.source.to_string())
    }
}
