//! A service manager for one service, speaking to it what systemd speaks to a `Type=notify`
//! service with `NotifyAccess=main` and `FileDescriptorStoreMax=`: the same protocol, so the
//! service runs the code path it runs under systemd.
//!
//! - A Unix datagram socket (a path in the test's directory, `$NOTIFY_SOCKET`) receives the
//!   service's notifications with their senders' credentials. Only the main process's are
//!   accepted (`NotifyAccess=main`). `READY=1`, `STOPPING=1`, `STATUS=…` are recorded;
//!   `FDSTORE=1` with `FDNAME=…` stores the attached descriptors (a file already stored is not
//!   stored twice — systemd compares files with `kcmp`; beyond the store's size they are
//!   closed); `FDSTOREREMOVE=1` closes every stored descriptor of that name.
//! - A stored descriptor that reports `POLLHUP` or `POLLERR` is closed (systemd watches them
//!   with epoll for that; descriptors epoll cannot watch, such as memory files, just stay).
//! - [`Service::start`] passes the store to the new process as systemd does: descriptors 3… in
//!   the order they were stored, `$LISTEN_FDS`, `$LISTEN_FDNAMES` (`:`-separated) and
//!   `$LISTEN_PID` (the new process's PID: a shell sets it and `exec`s the service, keeping its
//!   PID), plus `$NOTIFY_SOCKET`.
//! - [`Service::restart`] is `systemctl restart` (SIGTERM, wait, start; the store is kept),
//!   [`Service::crash_and_restart`] is a SIGKILL followed by `Restart=always` after `RestartSec=`,
//!   [`Service::stop`] is `systemctl stop` (SIGTERM, wait, then the store is emptied, which
//!   closes what it held).
//!
//! Processes are started through the [`Testbed`], so they are killed by PID when it drops.
#![allow(unsafe_code)]

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags};

use crate::cluster::running;
use crate::{wait_for, Netns, Testbed};

/// One stored descriptor.
#[derive(Debug)]
struct Stored {
    name: String,
    fd: OwnedFd,
    /// Unique in this store: epoll events name it (a descriptor number may be reused).
    id: u64,
}

/// What the service manager knows about its service.
#[derive(Debug, Default)]
struct State {
    main_pid: Option<u32>,
    ready: bool,
    stopping: bool,
    status: String,
    store: Vec<Stored>,
    /// Descriptors closed because they reported POLLHUP/POLLERR (names).
    hung_up: Vec<String>,
    /// Notifications from other processes than the main one (dropped, as systemd drops them).
    rejected: usize,
    /// Every accepted notification, in order.
    log: VecDeque<String>,
    next_id: u64,
}

/// How the service's process is started: `ip netns exec <ns> sh -c 'LISTEN_PID=$$ exec …'`.
#[derive(Debug, Clone)]
pub struct ExecStart {
    /// The namespace it runs in.
    pub netns: Netns,
    /// The program (its path; changing it between starts is an upgrade).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Environment variables set for it.
    pub env: Vec<(String, String)>,
    /// Where its stderr is appended.
    pub log: PathBuf,
}

/// A service under the emulated service manager.
pub struct Service {
    state: Arc<Mutex<State>>,
    socket_path: PathBuf,
    exec: Mutex<ExecStart>,
    max_fds: usize,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("socket", &self.socket_path).finish()
    }
}

/// How a process ended when the service manager stopped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited within the stop timeout.
    Exited,
    /// It did not, and was killed.
    Killed,
}

impl Service {
    /// A service manager listening at `dir/<name>.notify`, with a store of `max_fds`
    /// descriptors (`FileDescriptorStoreMax=`); nothing is started yet.
    ///
    /// # Panics
    /// When the socket cannot be bound.
    pub fn new(dir: &Path, name: &str, exec: ExecStart, max_fds: usize) -> Service {
        let socket_path = dir.join(format!("{name}.notify"));
        let _ = std::fs::remove_file(&socket_path);
        let sock = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        socket::setsockopt(&sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("svc-{name}"))
                .spawn(move || manager_loop(sock, state, stop, max_fds))
                .expect("spawn the service manager thread")
        };
        Service { state, socket_path, exec: Mutex::new(exec), max_fds, stop, thread: Some(thread) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The main process's PID, while one was started.
    pub fn main_pid(&self) -> Option<u32> {
        self.lock().main_pid
    }

    /// Whether the current main process sent `READY=1`.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// Whether the current main process sent `STOPPING=1`.
    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// The last `STATUS=` of the current main process.
    pub fn status(&self) -> String {
        self.lock().status.clone()
    }

    /// The names of the stored descriptors, in store order.
    pub fn stored(&self) -> Vec<String> {
        self.lock().store.iter().map(|s| s.name.clone()).collect()
    }

    /// Stored descriptors closed because they reported POLLHUP or POLLERR.
    pub fn hung_up(&self) -> Vec<String> {
        self.lock().hung_up.clone()
    }

    /// Notifications dropped because they came from another process than the main one.
    pub fn rejected(&self) -> usize {
        self.lock().rejected
    }

    /// Every accepted notification so far, oldest first.
    pub fn notifications(&self) -> Vec<String> {
        self.lock().log.iter().cloned().collect()
    }

    /// The store's size (`FileDescriptorStoreMax=`).
    pub fn max_fds(&self) -> usize {
        self.max_fds
    }

    /// Runs a different program from the next start on (an upgrade: the unit's `ExecStart=`
    /// path now holds a new binary).
    pub fn set_program(&self, program: PathBuf) {
        self.exec.lock().unwrap_or_else(|e| e.into_inner()).program = program;
    }

    /// Starts the main process with the store passed as `$LISTEN_FDS`; returns its PID.
    ///
    /// # Panics
    /// When a process is still running, or the descriptors cannot be duplicated.
    pub fn start(&self, tb: &Testbed) -> u32 {
        let exec = self.exec.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut st = self.lock();
        if let Some(pid) = st.main_pid {
            assert!(!running(pid), "the service's process {pid} still runs");
        }
        // Copies above every number they are placed at (close-on-exec), placed at 3… in the
        // child, so no dup2 overwrites a copy not placed yet.
        let above = 3 + st.store.len() as RawFd + 64;
        let copies: Vec<OwnedFd> =
            st.store.iter().map(|s| dup_above(s.fd.as_raw_fd(), above)).collect();
        let names: Vec<&str> = st.store.iter().map(|s| s.name.as_str()).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&exec.log)
            .expect("service log");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &exec.netns.name,
            "sh",
            "-c",
            r#"export LISTEN_PID=$$; exec "$0" "$@""#,
        ])
        .arg(&exec.program)
        .args(&exec.args)
        .envs(exec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("NOTIFY_SOCKET", &self.socket_path)
        .env_remove("LISTEN_PID")
        .stdout(Stdio::null())
        .stderr(log);
        if copies.is_empty() {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
        } else {
            cmd.env("LISTEN_FDS", copies.len().to_string()).env("LISTEN_FDNAMES", names.join(":"));
        }
        let raw: Vec<RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
        // SAFETY: the closure runs in the child between fork and exec and calls only dup2,
        // which is async-signal-safe; `raw` was built before the fork and is only read.
        unsafe {
            cmd.pre_exec(move || {
                for (i, fd) in raw.iter().enumerate() {
                    // dup2 clears close-on-exec on the new descriptor; the copies keep it and
                    // close at exec.
                    if nix::libc::dup2(*fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let pid = tb.spawn(cmd);
        drop(copies);
        st.main_pid = Some(pid);
        st.ready = false;
        st.stopping = false;
        st.status.clear();
        pid
    }

    /// Waits up to `timeout` for `READY=1` from the current main process; `false` when it did
    /// not come (or the process exited).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        wait_for(timeout, || {
            let st = self.lock();
            if st.ready {
                return Some(true);
            }
            match st.main_pid {
                Some(pid) if running(pid) => None,
                _ => Some(false),
            }
        })
        .unwrap_or(false)
    }

    /// Sends `signal` to the main process and waits up to `timeout` for it to exit; kills it
    /// after that. Reaps it.
    pub fn signal_and_wait(&self, tb: &Testbed, signal: &str, timeout: Duration) -> Ended {
        let Some(pid) = self.main_pid() else { return Ended::Exited };
        let _ = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
        let gone = wait_for(timeout, || (!running(pid)).then_some(()));
        tb.kill(pid);
        if gone.is_some() {
            Ended::Exited
        } else {
            Ended::Killed
        }
    }

    /// `systemctl restart`: SIGTERM, wait up to `timeout`, start again with the store. Returns
    /// how the old process ended, the new PID and how long the old process took to exit.
    pub fn restart(&self, tb: &Testbed, timeout: Duration) -> (Ended, u32, Duration) {
        let t0 = Instant::now();
        let ended = self.signal_and_wait(tb, "TERM", timeout);
        let took = t0.elapsed();
        (ended, self.start(tb), took)
    }

    /// A crash and `Restart=always`: SIGKILL, then a start `restart_sec` later (systemd's
    /// `RestartSec=`). Returns the new PID.
    pub fn crash_and_restart(&self, tb: &Testbed, restart_sec: Duration) -> u32 {
        self.signal_and_wait(tb, "KILL", Duration::from_secs(5));
        std::thread::sleep(restart_sec);
        self.start(tb)
    }

    /// `systemctl stop`: SIGTERM, wait up to `timeout`, then empty the store (its descriptors
    /// close, and with them whatever only they kept alive).
    pub fn stop(&self, tb: &Testbed, timeout: Duration) -> Ended {
        let ended = self.signal_and_wait(tb, "TERM", timeout);
        let mut st = self.lock();
        st.store.clear();
        st.main_pid = None;
        ended
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// A close-on-exec duplicate of `fd` numbered `min` or above.
fn dup_above(fd: RawFd, min: RawFd) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor (or fails); no memory is involved.
    let new = unsafe { nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, min) };
    assert!(new >= 0, "dup stored descriptor: {}", std::io::Error::last_os_error());
    // SAFETY: `new` was just created and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(new) }
}

/// Whether two descriptors of this process refer to the same open file (`kcmp KCMP_FILE`).
fn same_file(a: RawFd, b: RawFd) -> bool {
    let pid = std::process::id() as nix::libc::c_long;
    // SAFETY: kcmp only compares kernel objects; the descriptors are this process's.
    let r =
        unsafe { nix::libc::syscall(nix::libc::SYS_kcmp, pid, pid, 0 as nix::libc::c_long, a, b) };
    r == 0
}

const SOCKET_TOKEN: u64 = u64::MAX;

fn manager_loop(
    sock: UnixDatagram,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    max_fds: usize,
) {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll");
    epoll
        .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, SOCKET_TOKEN))
        .expect("epoll add notify socket");
    // Stored descriptors registered for hang-ups, by id. One-shot: a registration outlives a
    // descriptor the store closed while the file stays open elsewhere, and must not fire again.
    let mut watched: HashSet<u64> = HashSet::new();
    let mut events = [EpollEvent::empty(); 32];
    while !stop.load(Ordering::Acquire) {
        {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            for s in &st.store {
                if watched.insert(s.id) {
                    // Events 0: only EPOLLHUP and EPOLLERR, which epoll always reports. Files
                    // epoll cannot watch (EPERM: memory files, bpf links) are kept unwatched.
                    let _ =
                        epoll.add(s.fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLONESHOT, s.id));
                }
            }
        }
        let n = match epoll.wait(&mut events, EpollTimeout::from(50u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("epoll_wait: {e}"),
        };
        for ev in &events[..n] {
            if ev.data() == SOCKET_TOKEN {
                while let Some((text, pid, fds)) = receive(&sock) {
                    handle(&state, &text, pid, fds, max_fds);
                }
            } else if ev.events().intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(i) = st.store.iter().position(|s| s.id == ev.data()) {
                    let s = st.store.remove(i);
                    st.hung_up.push(s.name);
                }
            }
        }
    }
}

/// One datagram: its text, the sender's PID and the descriptors attached.
fn receive(sock: &UnixDatagram) -> Option<(String, Option<u32>, Vec<OwnedFd>)> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 64], nix::sys::socket::UnixCredentials);
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let mut pid = None;
    let mut fds = Vec::new();
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid() as u32),
                ControlMessageOwned::ScmRights(raw) => {
                    // SAFETY: the kernel just installed these descriptors in this process for
                    // this message; nothing else owns them.
                    fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
                _ => {}
            }
        }
    }
    let len = msg.bytes;
    Some((String::from_utf8_lossy(&buf[..len]).into_owned(), pid, fds))
}

/// What systemd's `fdname_is_valid` accepts.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b':')
}

fn handle(state: &Mutex<State>, text: &str, pid: Option<u32>, fds: Vec<OwnedFd>, max_fds: usize) {
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    if pid.is_none() || pid != st.main_pid {
        st.rejected += 1;
        return; // `fds` close here
    }
    st.log.push_back(text.to_string());
    let mut fdstore = false;
    let mut remove = false;
    let mut name = "stored".to_string();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => st.ready = true,
            Some(("STOPPING", "1")) => st.stopping = true,
            Some(("STATUS", s)) => st.status = s.to_string(),
            Some(("FDSTORE", "1")) => fdstore = true,
            Some(("FDSTOREREMOVE", "1")) => remove = true,
            Some(("FDNAME", n)) => name = n.to_string(),
            _ => {}
        }
    }
    if remove && valid_name(&name) {
        st.store.retain(|s| s.name != name);
    }
    if fdstore && valid_name(&name) {
        for fd in fds {
            if st.store.iter().any(|s| same_file(s.fd.as_raw_fd(), fd.as_raw_fd())) {
                continue; // systemd keeps one copy of a file
            }
            if st.store.len() >= max_fds {
                continue; // systemd closes what does not fit
            }
            st.next_id += 1;
            let id = st.next_id;
            st.store.push(Stored { name: name.clone(), fd, id });
        }
    }
}
