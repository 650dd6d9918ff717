//! `linend`: linen's node daemon. Everything it does lives in [`linen_controlplane::daemon`]
//! (modes, datapath set-up, hand-over, run loop); this binary parses the options and calls it.

use clap::Parser;
use linen_controlplane::daemon::{self, Args};
use linen_dataplane::io::fdstore;

fn main() -> std::process::ExitCode {
    // A service manager's descriptors (a datapath handed over by the previous run) are taken
    // before anything else runs or opens a file.
    let listen = fdstore::take_listen_fds();
    daemon::init_logging();
    daemon::main(Args::parse(), listen)
}
