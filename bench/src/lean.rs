//! A lean WebSocket client for `cursors` and `durable`, the scenarios whose load generator must
//! cost less than the server it measures. Through tungstenite, every received frame was copied, allocated as a
//! message and checked as UTF-8 behind a lock shared with the sending half, and every read
//! zero-filled its buffer: the load generator spent more CPU than the relay it measured.
//! Here a socket's bytes are read into one buffer without zero-filling, frames are handed out as
//! slices of it, and sends are one masked frame written straight to the socket.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::client::{dial, target};

/// Text frame opcode.
pub const TEXT: u8 = 1;
/// Binary frame opcode.
pub const BINARY: u8 = 2;
const CLOSE: u8 = 8;
/// Largest frame accepted from a server; a larger one ends the connection.
const MAX_FRAME: u64 = 1 << 24;
/// Free space a read asks for.
const READ_ROOM: usize = 16 * 1024;

/// The receiving half: a buffer of what the socket delivered, consumed frame by frame.
pub struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
}

/// The sending half.
pub struct Writer {
    half: OwnedWriteHalf,
    out: Vec<u8>,
}

/// Opens a WebSocket to `base` for `board` from `source` and waits for its first frame (the
/// snapshot); with `packed`, asking for `boardcast.v1.msgpack`.
pub async fn open(
    base: &str,
    board: &str,
    token: &str,
    source: IpAddr,
    packed: bool,
) -> Result<(Reader, Writer), String> {
    let addr = target(base)?;
    let (read, mut write) = dial(base, source).await?.into_split();
    let protocol = if packed {
        "Sec-WebSocket-Protocol: boardcast.v1.msgpack\r\n"
    } else {
        ""
    };
    // The key is fixed: the client checks nothing of the answer but its status.
    let request = format!(
        "GET /ws/{board}?token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{protocol}\r\n"
    );
    write
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut reader = Reader {
        half: read,
        buf: Vec::with_capacity(READ_ROOM),
        start: 0,
    };
    let upgrade = async {
        let head = loop {
            if let Some(end) = reader.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if reader.buf.len() > 16 * 1024 || reader.fill().await? == 0 {
                return Err(io::Error::other("no upgrade answer"));
            }
        };
        if !reader.buf.starts_with(b"HTTP/1.1 101") {
            let line = reader.buf.split(|b| *b == b'\r').next().unwrap_or_default();
            return Err(io::Error::other(format!(
                "refused: {}",
                String::from_utf8_lossy(line)
            )));
        }
        reader.start = head;
        // The first frame is the snapshot.
        loop {
            let mut first = false;
            reader.frames(|opcode, _| first |= opcode == TEXT || opcode == BINARY)?;
            if first {
                return Ok(());
            }
            if reader.fill().await? == 0 {
                return Err(io::Error::other("closed before the snapshot"));
            }
        }
    };
    let outcome = tokio::time::timeout(Duration::from_secs(30), upgrade).await;
    match outcome {
        Ok(Ok(())) => Ok((
            reader,
            Writer {
                half: write,
                out: Vec::with_capacity(256),
            },
        )),
        Ok(Err(e)) => Err(format!("upgrade: {e}")),
        Err(_) => Err("upgrade timed out".to_string()),
    }
}

impl Reader {
    /// Waits until the socket has bytes and appends what it has; `Ok(0)` at its end.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_ROOM);
        self.half.read_buf(&mut self.buf).await
    }

    /// Hands every complete frame in the buffer to `each` as its opcode and payload, keeping a
    /// partial one for the next read. A masked or oversized frame is an error: no server sends one.
    pub fn frames(&mut self, mut each: impl FnMut(u8, &[u8])) -> io::Result<()> {
        while let Some((opcode, head, len)) = header(&self.buf[self.start..])? {
            let rest = &self.buf[self.start..];
            if rest.len() < head + len {
                break;
            }
            each(opcode, &rest[head..head + len]);
            self.start += head + len;
        }
        Ok(())
    }
}

/// A frame's opcode, header length and payload length, once its header is in `bytes`.
fn header(bytes: &[u8]) -> io::Result<Option<(u8, usize, usize)>> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(io::Error::other("a server frame is masked"));
    }
    let (head, len) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (4, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (10, u64::from_be_bytes(b)),
            None => return Ok(None),
        },
        short => (2, u64::from(short)),
    };
    if len > MAX_FRAME {
        return Err(io::Error::other(format!("a {len}-byte frame")));
    }
    Ok(Some((first & 0x0f, head, len as usize)))
}

impl Writer {
    /// Sends one frame, masked as a client must.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.push(opcode, payload);
        self.flush().await
    }

    /// Queues one frame for the next [`flush`](Self::flush): frames queued together go out in
    /// one write.
    pub fn push(&mut self, opcode: u8, payload: &[u8]) {
        encode(&mut self.out, opcode, payload, rand::random());
    }

    /// Writes every queued frame.
    pub async fn flush(&mut self) -> io::Result<()> {
        let written = self.half.write_all(&self.out).await;
        self.out.clear();
        written
    }

    /// Sends a close frame and shuts the sending side.
    pub async fn close(&mut self) -> io::Result<()> {
        self.send(CLOSE, &[]).await?;
        self.half.shutdown().await
    }
}

/// Appends a final, masked frame of `payload` to `out`.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=65535 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_masked_and_sized() {
        let mut out = vec![];
        encode(&mut out, TEXT, b"abcde", [1, 2, 3, 4]);
        assert_eq!(&out[..6], &[0x81, 0x85, 1, 2, 3, 4]);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4])
            .collect();
        assert_eq!(unmasked, b"abcde");
        out.clear();
        encode(&mut out, BINARY, &[0; 300], [0; 4]);
        assert_eq!(&out[..4], &[0x82, 0x80 | 126, 1, 44]);
    }

    #[test]
    fn headers_wait_for_their_bytes() {
        assert_eq!(header(&[0x81]).ok(), Some(None));
        assert_eq!(header(&[0x81, 5]).ok(), Some(Some((TEXT, 2, 5))));
        assert_eq!(header(&[0x82, 126, 1]).ok(), Some(None));
        assert_eq!(
            header(&[0x82, 126, 1, 44]).ok(),
            Some(Some((BINARY, 4, 300)))
        );
        assert!(header(&[0x81, 0x85]).is_err());
        assert!(header(&[0x82, 127, 0, 0, 0, 1, 0, 0, 0, 0]).is_err());
    }
}
