//! A loopback TCP forwarder a test puts between an AIMS server and the local PostgreSQL (an
//! engine's connection URL names the forwarder), to fault the engine for real:
//!
//! - [`Mode::Pass`] moves bytes both ways;
//! - [`Mode::Hold`] stops moving bytes on every connection, closing none: the engine hangs;
//! - [`Mode::HoldAfterCommit`] passes bytes until a client sends `COMMIT`, which reaches the
//!   database, then holds everything: the transaction is committed and its answer is lost;
//! - [`Mode::Down`] closes the listener and drops every live connection: the engine is gone
//!   (connections are refused) until the mode changes again, when it listens on the same port.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the forwarder does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Hold,
    HoldAfterCommit,
    Down,
}

/// A forwarder running on the test's runtime; dropping it stops it.
pub struct Forwarder {
    /// Where it listens.
    pub addr: SocketAddr,
    mode: std::sync::Arc<watch::Sender<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = bind("127.0.0.1:0".parse().unwrap());
        let addr = listener.local_addr().unwrap();
        let mode = std::sync::Arc::new(watch::channel(Mode::Pass).0);
        let task = tokio::spawn(serve(Some(listener), addr, upstream, mode.clone()));
        Self { addr, mode, task }
    }

    /// Switches to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// The mode now (`HoldAfterCommit` turns into `Hold` once a `COMMIT` went through).
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.set(Mode::Down);
    }
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(64).unwrap()
}

async fn serve(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: std::sync::Arc<watch::Sender<Mode>>,
) {
    let mut changes = mode.subscribe();
    loop {
        if let Some(open) = &listener {
            tokio::select! {
                accepted = open.accept() => {
                    if let Ok((client, _)) = accepted {
                        tokio::spawn(relay(client, upstream, mode.clone()));
                    }
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if *changes.borrow_and_update() == Mode::Down {
                        listener = None;
                    }
                }
            }
        } else {
            if changes.changed().await.is_err() {
                return;
            }
            if *changes.borrow_and_update() != Mode::Down {
                listener = Some(bind(addr));
            }
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mode: std::sync::Arc<watch::Sender<Mode>>) {
    if *mode.borrow() == Mode::Down {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Either direction ending drops both connections.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone(), true) => {}
        () = pump(server_read, client_write, mode, false) => {}
    }
}

/// Waits until traffic may move; false when the connection is to be dropped.
async fn may_move(changes: &mut watch::Receiver<Mode>) -> bool {
    loop {
        match *changes.borrow_and_update() {
            Mode::Pass | Mode::HoldAfterCommit => return true,
            Mode::Down => return false,
            Mode::Hold => {}
        }
        if changes.changed().await.is_err() {
            return false;
        }
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mode: std::sync::Arc<watch::Sender<Mode>>,
    to_database: bool,
) {
    let mut changes = mode.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !may_move(&mut changes).await {
            return;
        }
        // A read cut off by a change of mode loses nothing (reading is cancel-safe).
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = changes.changed() => continue,
        };
        if !may_move(&mut changes).await {
            return;
        }
        let chunk = buf.get(..n).unwrap();
        if to.write_all(chunk).await.is_err() {
            return;
        }
        if to_database
            && *changes.borrow() == Mode::HoldAfterCommit
            && chunk.windows(6).any(|w| w == b"COMMIT")
        {
            mode.send_replace(Mode::Hold);
        }
    }
}
