//! TCP_NODELAY on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting TCP_NODELAY (transact-rs/sqlx#4335). Without
//! it, a statement whose last bytes fill less than a TCP segment waits for
//! the server's delayed ACK, 40 ms on Linux. Batches of dead-letter rows are
//! such statements: a revoked-key storm wrote 2,200 rows/s without the
//! option and 13,600 with it (`cargo bench`, scenario e). sqlx gives no
//! access to its sockets, so after each new connection
//! [`set_on_sockets_to`] finds this process's TCP sockets to the database's
//! port and sets the option on them. The fix is merged upstream
//! (transact-rs/sqlx#4336) but not released; a test below fails the day a
//! release sets the option itself, so this module gets deleted then.

/// Calls `f` with each socket of this process. Linux only (reads
/// `/proc/self/fd`).
#[cfg(target_os = "linux")]
fn each_socket(mut f: impl FnMut(socket2::SockRef<'_>)) {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
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
        f(socket2::SockRef::from(&fd));
    }
}

#[cfg(target_os = "linux")]
fn peer_port(socket: &socket2::SockRef<'_>) -> Option<u16> {
    let addr = socket.peer_addr().ok()?;
    addr.as_socket().map(|a| a.port())
}

/// Sets TCP_NODELAY on every TCP socket of this process connected to
/// `port`; returns how many it changed. Elsewhere than Linux it does nothing.
#[cfg(target_os = "linux")]
pub(crate) fn set_on_sockets_to(port: u16) -> usize {
    let mut changed = 0;
    each_socket(|socket| {
        if peer_port(&socket) == Some(port)
            && socket.tcp_nodelay().is_ok_and(|on| !on)
            && socket.set_tcp_nodelay(true).is_ok()
        {
            changed += 1;
        }
    });
    changed
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn set_on_sockets_to(_port: u16) -> usize {
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

    /// The day sqlx sets TCP_NODELAY itself, this fails: delete this module
    /// and its call in `store.rs`. The pool reaches PostgreSQL through a
    /// loopback proxy on a port of its own, so the workaround, run by other
    /// tests in this process against port 5432, never touches its socket.
    #[tokio::test]
    async fn sqlx_still_leaves_tcp_nodelay_off() {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = proxy.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut db = tokio::net::TcpStream::connect("127.0.0.1:5432")
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut db).await;
        });
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .await
            .expect("postgres through the proxy");
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        let mut seen = Vec::new();
        each_socket(|socket| {
            if peer_port(&socket) == Some(port) {
                seen.push(socket.tcp_nodelay().unwrap());
            }
        });
        assert_eq!(seen.len(), 1, "the pool's one connection");
        assert!(
            !seen[0],
            "sqlx now sets TCP_NODELAY itself (transact-rs/sqlx#4336 released): \
             delete src/deadletter/nodelay.rs and its call in store.rs"
        );
        pool.close().await;
    }
}
