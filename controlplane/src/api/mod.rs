//! The node API: [`metrics`] serves `/metrics`, `/healthz`, `/readyz` and the `/v1` JSON on the
//! node's management address; [`ctl_node`] is `linenctl`'s client for it.

pub mod ctl_node;
pub mod metrics;
