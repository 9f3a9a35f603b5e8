//! TCP_NODELAY on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY (transact-rs/sqlx#4335). Without
//! it, a statement whose last bytes fill less than a TCP segment waits for
//! the server's delayed ACK, 40 ms on Linux. Batches of dead-letter rows are
//! such statements: a revoked-key storm wrote 2,200 rows/s without the
//! option and 13,600 with it (`cargo bench`, scenario e). sqlx gives no
//! access to its sockets, so after each new connection
//! [`set_on_sockets_to`] finds this process's TCP sockets to the database's
//! port and sets the option on them. Remove once sqlx sets it again.

/// Sets TCP_NODELAY on every TCP socket of this process connected to
/// `port`; returns how many it changed. Linux only (reads `/proc/self/fd`);
/// elsewhere it does nothing.
#[cfg(target_os = "linux")]
pub fn set_on_sockets_to(port: u16) -> usize {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut changed = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: `fd` was an open socket a moment ago and is only used for
        // getpeername/getsockopt/setsockopt within this iteration. Should
        // another thread close it meanwhile, the calls fail, or, if the
        // number was reused, act on a socket where TCP_NODELAY is harmless.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_port = socket
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| a.port() == port);
        if to_port
            && socket.tcp_nodelay().is_ok_and(|on| !on)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            changed += 1;
        }
    }
    changed
}

#[cfg(not(target_os = "linux"))]
pub fn set_on_sockets_to(_port: u16) -> usize {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn sets_the_option_only_on_sockets_to_the_port() {
        let db = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let to_db = TcpStream::connect(db.local_addr().unwrap()).unwrap();
        let to_other = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_db.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
        assert!(set_on_sockets_to(db.local_addr().unwrap().port()) >= 1);
        assert!(to_db.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
        // Already set: nothing left to change.
        assert_eq!(set_on_sockets_to(db.local_addr().unwrap().port()), 0);
    }
}
