//! `linend --cleanup`.

use crate::kernel::{Kernel, OVERLAY_DEV};
use crate::masq::{self, Masquerade, NftCommand};
use tracing::{info, warn};

use super::{Args, BoxError};

/// `linend --cleanup`: removes `linen.1` (with its routes and neighbours), the masquerade
/// table and the direct routes into the network of `--subnet-file`, whatever is there.
pub(super) async fn cleanup(args: Args) -> Result<(), BoxError> {
    let kernel = Kernel::connect()?;
    if kernel.link_by_name(OVERLAY_DEV).await?.is_some() {
        kernel.delete_link(OVERLAY_DEV).await?;
        info!("{OVERLAY_DEV} removed");
    }
    match Masquerade::new(NftCommand::default()).remove_stale() {
        Ok(true) => info!("masquerade table ip {} removed", masq::TABLE),
        Ok(false) | Err(masq::MasqError::NftMissing { .. }) => {}
        Err(e) => warn!("cannot remove the masquerade table: {e}"),
    }
    match crate::subnet_env::SubnetEnv::read(&args.subnet_file) {
        Ok(env) => {
            let underlay = kernel.underlay(args.iface.as_deref(), args.public_ip).await?;
            kernel
                .remove_direct_routes(
                    underlay.link.index,
                    &underlay.link.name,
                    env.network,
                    &[],
                    None,
                )
                .await?;
            info!(network = %env.network, underlay = %underlay.link.name, "direct routes removed");
        }
        Err(e) => info!("no subnet file ({e}); no direct routes to look for"),
    }
    Ok(())
}
