//! The worker threads: one per queue, each running the datapath's poll loop.

use std::sync::Arc;

use linen_dataplane::io::xsk::pin_current_thread;
use linen_dataplane::io::PacketQueue;
use linen_dataplane::worker::{LoopStats, PollConfig, VxlanHandler, Worker, WorkerControl};
use tracing::{info, warn};

/// One running worker thread; it returns its queue (boxed) so the caller decides when the
/// queue's devices close.
pub(super) struct Running {
    pub(super) thread: std::thread::JoinHandle<std::io::Result<Box<dyn std::any::Any + Send>>>,
    pub(super) control: WorkerControl,
}

/// Spawns a worker thread named `linen-<name>` over `queue`, pinned to `cpu` when given.
pub(super) fn spawn_worker<Q: PacketQueue + 'static>(
    name: String,
    queue: Q,
    handler: VxlanHandler,
    poll: PollConfig,
    cpu: Option<usize>,
) -> std::io::Result<(Running, Arc<LoopStats>)> {
    let worker = Worker::new(name.clone(), queue, handler, poll)?;
    let control = worker.control();
    let loop_stats = worker.loop_stats();
    let thread = std::thread::Builder::new().name(format!("linen-{name}")).spawn(move || {
        if let Some(cpu) = cpu {
            match pin_current_thread(cpu) {
                Ok(()) => info!(worker = %name, cpu, "worker pinned"),
                Err(e) => warn!(worker = %name, cpu, error = %e, "cannot pin the worker"),
            }
        }
        worker.run().map(|(q, _h)| Box::new(q) as Box<dyn std::any::Any + Send>)
    })?;
    Ok((Running { thread, control }, loop_stats))
}

/// Stops every worker and waits for it (used when start-up ends early).
pub(super) fn stop_workers(workers: Vec<Running>) {
    for w in &workers {
        w.control.stop();
    }
    for w in workers {
        let _ = w.thread.join();
    }
}
