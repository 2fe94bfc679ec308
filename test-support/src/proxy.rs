//! A TCP proxy a test can cut, to stand for a network partition between two processes on
//! loopback: cut, it refuses new connections and forwards nothing on open ones, whose sockets
//! stay open — as a peer behind a dropped route looks (no reset, no FIN; only timeouts and
//! keep-alive pings can tell).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections on [`Self::address`] to a loopback port until cut; the accept task
/// ends with the runtime.
pub struct CuttableProxy {
    /// `127.0.0.1:<free port>`.
    pub address: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl CuttableProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let Ok(target) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (target_read, target_write) = target.into_split();
                    tokio::join!(
                        forward(client_read, target_write, Arc::clone(&flag)),
                        forward(target_read, client_write, flag),
                    );
                });
            }
        });
        Ok(Self { address, cut })
    }

    /// From now on: new connections refused, open ones silent.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// Copies until either side closes; once cut, reads are no longer forwarded and the
/// connection is held open, silent, until the runtime ends.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
