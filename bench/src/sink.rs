//! A peer that only reads: it completes the AMQP handshake, opens channels, answers
//! closes, and discards everything else. Publishing into it measures the client's
//! own ceiling, which is what caps a broker's figure when the client is the limit.
//!
//! It runs on plain threads with blocking sockets, one per connection, so that it
//! never waits for the bench's async runtime: the figure is the client's alone.
//! After each read it sleeps a millisecond before the next: a reader parked on the
//! socket makes every write of the client pay for waking it, which is a cost of
//! the reader, not of the client (Warren batches its reads while a client streams
//! for the same reason; see the broker's `pacing` module).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use crate::procs::Result;

const FRAME_METHOD: u8 = 1;
const FRAME_END: u8 = 0xCE;

/// Listens on a free port and serves every connection until the process ends.
pub fn start() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = serve(stream);
            });
        }
    });
    Ok(format!("amqp://guest:guest@{addr}/%2f"))
}

fn method(channel: u16, class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut f = vec![FRAME_METHOD];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&(4 + args.len() as u32).to_be_bytes());
    f.extend_from_slice(&class.to_be_bytes());
    f.extend_from_slice(&method.to_be_bytes());
    f.extend_from_slice(args);
    f.push(FRAME_END);
    f
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn serve(mut stream: TcpStream) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut header = [0u8; 8];
    stream.read_exact(&mut header)?;
    // connection.start: 0-9, no server properties, PLAIN, en_US.
    let mut start = vec![0, 9];
    long_str(&mut start, b"");
    long_str(&mut start, b"PLAIN");
    long_str(&mut start, b"en_US");
    stream.write_all(&method(0, 10, 10, &start))?;

    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(512 * 1024);
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        let mut replies = Vec::new();
        while pending.len() - at >= 7 {
            let size = u32::from_be_bytes(pending[at + 3..at + 7].try_into()?) as usize;
            if pending.len() - at < 8 + size {
                break;
            }
            let kind = pending[at];
            let channel = u16::from_be_bytes([pending[at + 1], pending[at + 2]]);
            let payload = &pending[at + 7..at + 7 + size];
            if kind == FRAME_METHOD && size >= 4 {
                let class = u16::from_be_bytes([payload[0], payload[1]]);
                let id = u16::from_be_bytes([payload[2], payload[3]]);
                match (class, id) {
                    // start-ok -> tune: 2047 channels, 128 KiB frames, no heartbeat.
                    (10, 11) => {
                        let mut tune = Vec::new();
                        tune.extend_from_slice(&2047u16.to_be_bytes());
                        tune.extend_from_slice(&131_072u32.to_be_bytes());
                        tune.extend_from_slice(&0u16.to_be_bytes());
                        replies.extend(method(0, 10, 30, &tune));
                    }
                    (10, 40) => replies.extend(method(0, 10, 41, &[0])),
                    (10, 50) => {
                        replies.extend(method(0, 10, 51, &[]));
                        stream.write_all(&replies)?;
                        return Ok(());
                    }
                    (20, 10) => replies.extend(method(channel, 20, 11, &[0, 0, 0, 0])),
                    (20, 40) => replies.extend(method(channel, 20, 41, &[])),
                    _ => {}
                }
            }
            at += 8 + size;
        }
        pending.drain(..at);
        if !replies.is_empty() {
            stream.write_all(&replies)?;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
