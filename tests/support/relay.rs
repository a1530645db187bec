//! A TCP relay on loopback in front of a server (Redis), for what only the wire can show:
//! - every byte is held for a fixed delay in each direction, so a request that waits for
//!   a client that waits for an answer before it speaks again leaves a gap of at least
//!   twice the delay between its requests: round trips are counted on the wire, as the
//!   bursts of requests the server sees, not by the code under test or by a timer that a
//!   busy machine would stretch;
//! - a connection can be cut right after a chosen request has reached the server and
//!   before its answer comes back, as a network failure would.

// Shared by the tests and the benchmarks; each uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

pub struct Relay {
    address: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    delay: Mutex<Duration>,
    /// Cut the next connection that sends a chunk holding these bytes.
    cut_on: Mutex<Option<Vec<u8>>>,
    cuts: Mutex<u32>,
    /// When each chunk from a client reached the relay.
    requests: Mutex<Vec<Instant>>,
}

impl Relay {
    /// Relays loopback connections to `target`, with no delay until one is set.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let state = Arc::new(State::default());
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = accepting.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, state).await;
                    }
                });
            }
        });
        Relay { address, state }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Holds every chunk this long in each direction from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Arms a cut: the next chunk from a client that contains `needle` is delivered to the
    /// server, whose answer is then dropped along with both connections.
    pub fn cut_after(&self, needle: &str) {
        *self.state.cut_on.lock().unwrap() = Some(needle.as_bytes().to_vec());
    }

    /// Bursts of requests clients sent since `since`: a chunk that comes more than the
    /// delay after the one before it opens a new burst. With a delay set, a request that
    /// waited for an earlier answer comes at least twice the delay after it, while
    /// requests sent together come within microseconds, so each burst is one round trip.
    pub fn bursts_since(&self, since: Instant) -> u32 {
        let gap = *self.state.delay.lock().unwrap();
        let requests = self.state.requests.lock().unwrap();
        let mut bursts = 0;
        let mut last: Option<Instant> = None;
        for &at in requests.iter().filter(|&&at| at >= since) {
            if last.is_none_or(|last| at.duration_since(last) > gap) {
                bursts += 1;
            }
            last = Some(at);
        }
        bursts
    }

    /// Waits until no client has sent anything for `quiet`, so that what is measured next
    /// is not mixed with what came before (a cold start's script loads, say).
    pub async fn settle(&self, quiet: Duration) {
        loop {
            let last = self.state.requests.lock().unwrap().last().copied();
            match last {
                Some(at) if at.elapsed() < quiet => tokio::time::sleep(quiet - at.elapsed()).await,
                _ => return,
            }
        }
    }

    /// How many connections were cut so far.
    pub fn cuts(&self) -> u32 {
        *self.state.cuts.lock().unwrap()
    }
}

async fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let cut = Arc::new(Cut::default());
    let upward = pump(client_read, server_write, state.clone(), cut.clone(), true);
    let downward = pump(server_read, client_write, state.clone(), cut.clone(), false);
    tokio::select! {
        biased;
        () = cut.done.notified() => {
            // The server got the request; let it run it, then drop its answer and the link.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        _ = async { tokio::join!(upward, downward) } => {}
    }
}

#[derive(Default)]
struct Cut {
    happened: AtomicBool,
    done: Notify,
}

/// Copies `from` to `to`, each chunk held for the current delay; chunks stay in order and
/// several can be in flight at once, as on a long link.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    cut: Arc<Cut>,
    upward: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>, bool)>();
    let reader_state = state.clone();
    let reader = async move {
        let state = reader_state;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = buffer[..n].to_vec();
            if upward {
                state.requests.lock().unwrap().push(Instant::now());
            }
            let cut_here = upward && {
                let mut armed = state.cut_on.lock().unwrap();
                let hit = armed
                    .as_ref()
                    .is_some_and(|needle| contains(&chunk, needle));
                if hit {
                    *armed = None;
                }
                hit
            };
            let due = Instant::now() + *state.delay.lock().unwrap();
            if tx.send((due, chunk, cut_here)).is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk, cut_here)) = rx.recv().await {
            // Without a delay, no timer: tokio's rounds up to the next millisecond, which
            // would add about 1 ms to every chunk of an undelayed measurement.
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if cut.happened.load(Ordering::SeqCst) || to.write_all(&chunk).await.is_err() {
                break;
            }
            if cut_here {
                cut.happened.store(true, Ordering::SeqCst);
                *state.cuts.lock().unwrap() += 1;
                cut.done.notify_one();
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
