//! The service manager's side of a restart: its notification socket and its file-descriptor
//! store, spoken as systemd documents them (`sd_notify(3)`, `sd_listen_fds(3)`,
//! `FileDescriptorStoreMax=` in `systemd.service(5)`). No systemd library is linked: the
//! protocol is a Unix datagram and a few environment variables.
//!
//! - [`Notifier`]: datagrams to `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`):
//!   `READY=1`, `STOPPING=1`, `STATUS=…`, and `FDSTORE=1` with a descriptor attached
//!   (`SCM_RIGHTS`) and a name (`FDNAME=…`), or `FDSTOREREMOVE=1` to drop a stored one.
//! - [`take_listen_fds`]: the descriptors a service manager passed to this process (`$LISTEN_PID`
//!   = our PID, `$LISTEN_FDS` descriptors from 3 on, named by `$LISTEN_FDNAMES`); after a restart
//!   those are the ones stored before.
//! - [`memfd`]: an anonymous memory file, the store's way of keeping state that is not a kernel
//!   object (UMEM frames, a description of what was stored).
//!
//! A stored descriptor keeps its kernel object — a TAP queue, a socket with its queued packets,
//! a bpf_link — alive while no process of the service runs, and the next process gets the same
//! object back. The service manager closes a stored descriptor when it reports `POLLHUP` or
//! `POLLERR`, and all of them when the service is stopped for good (not restarted).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Longest descriptor name the store accepts.
pub const MAX_NAME: usize = 255;

/// Whether `name` is a valid `FDNAME=` (what systemd's `fdname_is_valid` accepts): 1 to 255
/// printable ASCII characters other than `:` (the separator of `$LISTEN_FDNAMES`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b':')
}

/// The service manager's notification socket, from `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct Notifier {
    socket: OwnedFd,
    addr: libc::sockaddr_un,
    addr_len: libc::socklen_t,
    path: String,
}

impl Notifier {
    /// The socket named by `$NOTIFY_SOCKET`, or `None` when the variable is unset (no service
    /// manager listens).
    ///
    /// # Errors
    /// A value that is not an absolute path or an `@abstract` name, or longer than a socket
    /// address holds; the socket cannot be created.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) => Notifier::new(&v.to_string_lossy()).map(Some),
            None => Ok(None),
        }
    }

    /// A notifier for the socket at `path` (absolute, or `@name` for an abstract socket).
    ///
    /// # Errors
    /// As [`Notifier::from_env`].
    pub fn new(path: &str) -> io::Result<Notifier> {
        let bad = |why: &str| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("NOTIFY_SOCKET={path:?}: {why}"))
        };
        let bytes = path.as_bytes();
        // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let (abstract_name, body) = match bytes.first() {
            Some(b'/') => (false, bytes),
            Some(b'@') => (true, &bytes[1..]),
            _ => return Err(bad("not an absolute path or an @abstract name")),
        };
        // Abstract names start with a NUL byte; paths end with one.
        let offset = usize::from(abstract_name);
        if body.is_empty() || body.contains(&0) || offset + body.len() >= addr.sun_path.len() {
            return Err(bad("empty, or too long for a socket address"));
        }
        for (d, s) in addr.sun_path[offset..].iter_mut().zip(body) {
            *d = *s as libc::c_char;
        }
        let base = std::mem::size_of::<libc::sa_family_t>();
        let addr_len = if abstract_name { base + 1 + body.len() } else { base + body.len() + 1 };
        // SAFETY: plain socket(2); the descriptor is owned right below.
        let raw = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Notifier { socket, addr, addr_len: addr_len as libc::socklen_t, path: path.to_string() })
    }

    /// The socket's address as given (`/run/systemd/notify`, `@name`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, `STATUS=text`, several lines at once).
    ///
    /// # Errors
    /// The datagram could not be sent (no one listens, permission).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.send(state.as_bytes(), None)
    }

    /// Stores `fd` in the service manager under `name` (`FDSTORE=1`, `FDNAME=name`). The store
    /// keeps a duplicate of the descriptor; this process may close its own. Storing the same
    /// open file twice keeps one copy (systemd compares the files); a second file under the same
    /// name is stored beside the first, so names are unique only if the caller keeps them so.
    ///
    /// # Errors
    /// An invalid name ([`valid_name`]) or a failed send. A store that is full or disabled
    /// (`FileDescriptorStoreMax=0`) drops the descriptor without telling the sender.
    pub fn store(&self, name: &str, fd: BorrowedFd<'_>) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid descriptor name"),
            ));
        }
        self.send(format!("FDSTORE=1\nFDNAME={name}").as_bytes(), Some(fd.as_raw_fd()))
    }

    /// Drops every stored descriptor named `name` (`FDSTOREREMOVE=1`); the service manager closes
    /// them.
    ///
    /// # Errors
    /// An invalid name or a failed send.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        if !valid_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid descriptor name"),
            ));
        }
        self.send(format!("FDSTOREREMOVE=1\nFDNAME={name}").as_bytes(), None)
    }

    fn send(&self, payload: &[u8], fd: Option<RawFd>) -> io::Result<()> {
        const SPACE: usize = 24; // CMSG_SPACE(sizeof(int)) on 64-bit Linux
        #[repr(C, align(8))]
        struct Control([u8; SPACE]);
        let mut control = Control([0; SPACE]);
        let mut iov =
            libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
        // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the sendmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&self.addr as *const libc::sockaddr_un).cast_mut().cast();
        msg.msg_namelen = self.addr_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
            let (space, len) = unsafe {
                (
                    libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize,
                    libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize,
                )
            };
            debug_assert!(space <= SPACE);
            msg.msg_control = control.0.as_mut_ptr().cast();
            msg.msg_controllen = space;
            // SAFETY: `msg` points at `control`, which has room for one header and an int
            // (checked above), so CMSG_FIRSTHDR is non-null and its data area lies inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = len;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
            }
        }
        // SAFETY: `msg` and everything it points at are live for the call; the kernel only reads.
        let rc = unsafe { libc::sendmsg(self.socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Takes the descriptors a service manager passed to this process: `$LISTEN_FDS` descriptors
/// from [`LISTEN_FDS_START`] on, named by `$LISTEN_FDNAMES` (`unknown` where no name was
/// given), provided `$LISTEN_PID` is this process's PID (otherwise they were meant for a parent
/// and are left alone). Each gets `FD_CLOEXEC`, so no child inherits it, and the three variables
/// are removed from the environment.
///
/// Call it first thing in `main`, before any other thread starts or file is opened, as with
/// `sd_listen_fds`: the descriptors are taken over as owned.
///
/// # Errors
/// A malformed variable, or a listed descriptor that is not open.
pub fn take_listen_fds() -> io::Result<Vec<(String, OwnedFd)>> {
    let var = |k: &str| std::env::var(k).ok();
    let (Some(pid), Some(count)) = (var("LISTEN_PID"), var("LISTEN_FDS")) else {
        return Ok(Vec::new());
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let pid: u32 = pid.trim().parse().map_err(|_| bad("LISTEN_PID is not a number"))?;
    if pid != std::process::id() {
        return Ok(Vec::new());
    }
    let count: i32 = count.trim().parse().map_err(|_| bad("LISTEN_FDS is not a number"))?;
    if !(0..=4096).contains(&count) {
        return Err(bad("LISTEN_FDS is out of range"));
    }
    let names: Vec<String> = var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    let names_fit = names.len() == count as usize;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let fd = LISTEN_FDS_START + i;
        // SAFETY: F_GETFD/F_SETFD only read and set the descriptor flag; a closed descriptor
        // gives EBADF.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(io::Error::other(format!(
                "LISTEN_FDS names descriptor {fd}, which is not open: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: as above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
        // SAFETY: the service manager passed `fd` to this process (LISTEN_PID is ours) and
        // nothing in it has taken the descriptor yet (this runs before anything else opens or
        // adopts files), so it is ours to own and close.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = if names_fit { names[i as usize].clone() } else { "unknown".to_string() };
        out.push((name, owned));
    }
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(k);
    }
    Ok(out)
}

/// A new anonymous memory file (`memfd_create`, close-on-exec) named `name` (as
/// `/proc/PID/fd` shows it).
///
/// # Errors
/// The kernel's answer (no memfd support, no memory).
pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "memfd name with a NUL byte"))?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let raw = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Replaces the whole content of the memory file `fd` with `bytes` (written at offset 0, then
/// cut to their length). A reader that races a writer, or a process killed half-way, may see a
/// mix of old and new bytes: give the content a shape that such a mix fails to parse (JSON does).
///
/// # Errors
/// The write or the truncation failed.
pub fn memfd_replace(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: `rest` is a live slice of the stated length; the kernel only reads it.
        let n = unsafe {
            libc::pwrite(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len(), done as libc::off_t)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    // SAFETY: ftruncate on a descriptor; no memory is involved.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes.len() as libc::off_t) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The whole content of the file `fd` (read from offset 0), at most `limit` bytes.
///
/// # Errors
/// A read failure, or a file longer than `limit`.
pub fn read_all(fd: BorrowedFd<'_>, limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of the stated length.
        let n = unsafe {
            libc::pread(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                out.len() as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file larger than expected"));
        }
    }
}

/// The file's size (`fstat`).
///
/// # Errors
/// The kernel's answer.
pub fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: an all-zero stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn names_follow_systemds_rules() {
        assert!(valid_name("tap-0"));
        assert!(valid_name(&"x".repeat(255)));
        assert!(!valid_name(""));
        assert!(!valid_name(&"x".repeat(256)));
        assert!(!valid_name("a:b"));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name("é"));
    }

    #[test]
    fn notify_socket_addresses() {
        assert!(Notifier::new("relative").is_err());
        assert!(Notifier::new("@").is_err());
        assert!(Notifier::new(&format!("/{}", "x".repeat(200))).is_err());
        assert!(Notifier::new("/run/systemd/notify").is_ok());
        assert!(Notifier::new("@linen-test").is_ok());
    }

    /// What a service manager receives: the text, and the descriptor as a new one referring to
    /// the same file.
    #[test]
    fn a_stored_descriptor_arrives_with_its_name() {
        let dir = std::env::temp_dir().join(format!("linen-fdstore-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        let n = Notifier::new(path.to_str().unwrap()).expect("notifier");
        n.notify("READY=1").expect("notify");
        let mut buf = [0u8; 64];
        let got = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..got], b"READY=1");

        let file = memfd("linen-test").expect("memfd");
        memfd_replace(file.as_fd(), b"hello").expect("write");
        n.store("state", file.as_fd()).expect("store");
        let (text, fds) = recv_with_fds(&rx);
        assert_eq!(text, "FDSTORE=1\nFDNAME=state");
        assert_eq!(fds.len(), 1);
        assert_eq!(read_all(fds[0].as_fd(), 100).unwrap(), b"hello");
        memfd_replace(file.as_fd(), b"hi").expect("rewrite");
        assert_eq!(read_all(fds[0].as_fd(), 100).unwrap(), b"hi", "same file, shorter content");
        assert!(n.store("bad:name", file.as_fd()).is_err());
        n.remove("state").expect("remove");
        let (text, fds) = recv_with_fds(&rx);
        assert_eq!(text, "FDSTOREREMOVE=1\nFDNAME=state");
        assert!(fds.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn recv_with_fds(rx: &UnixDatagram) -> (String, Vec<OwnedFd>) {
        let mut buf = [0u8; 256];
        #[repr(C, align(8))]
        struct Control([u8; 64]);
        let mut control = Control([0; 64]);
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive recvmsg.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control.0.len();
        // SAFETY: `msg` describes live buffers.
        let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
        let mut fds = Vec::new();
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_type == libc::SCM_RIGHTS {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        (String::from_utf8_lossy(&buf[..n as usize]).into_owned(), fds)
    }
}
