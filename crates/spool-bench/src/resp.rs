//! A minimal RESP2 client connection: commands are appended to a write buffer, sent in one `write_all`, and their
//! replies read back in order. The bench uses this rather than the `redis` crate so that the generator spends its
//! CPU on the server's replies, not on a general-purpose client's per-command futures and channels: on a 2-core
//! machine shared with the server, every cycle the client saves is one the server can use.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One reply, as much of RESP2 as Spool and Redis send to the commands the bench uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text, for counting and showing what went wrong.
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    queued: usize,
}

impl Conn {
    pub async fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        // Pipelined batches are written whole; Nagle would only hold the last segment back for an ACK.
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: Vec::with_capacity(64 * 1024),
            queued: 0,
        })
    }

    /// Queues one command; nothing is sent until [`Conn::exchange`].
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.write.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            self.write.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            self.write.extend_from_slice(arg);
            self.write.extend_from_slice(b"\r\n");
        }
        self.queued += 1;
    }

    /// Sends every queued command and reads one reply for each, in order.
    pub async fn exchange(&mut self) -> io::Result<Vec<Reply>> {
        self.stream.write_all(&self.write).await?;
        self.write.clear();
        let want = std::mem::take(&mut self.queued);
        let mut replies = Vec::with_capacity(want);
        while replies.len() < want {
            match parse(&self.read)? {
                Some((reply, used)) => {
                    self.read.advance(used);
                    replies.push(reply);
                }
                None => {
                    if self.stream.read_buf(&mut self.read).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed the connection",
                        ));
                    }
                }
            }
        }
        Ok(replies)
    }

    /// One command, one reply.
    pub async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.command(args);
        Ok(self.exchange().await?.remove(0))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad RESP reply: {what}"))
}

/// The line starting at `at`, without its CRLF, and the offset after it; `None` if incomplete.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[at..at + end], at + end + 2))
}

fn int(bytes: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("not an integer"))
}

/// Parses one reply at the start of `buf`: `Ok(None)` means more bytes are needed.
pub fn parse(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], at: usize) -> io::Result<Option<(Reply, usize)>> {
    if at >= buf.len() {
        return Ok(None);
    }
    let Some((head, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    Ok(match buf[at] {
        b'+' => Some((Reply::Status(text()), next)),
        b'-' => Some((Reply::Error(text()), next)),
        b':' => Some((Reply::Int(int(head)?), next)),
        b'$' => {
            let len = int(head)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let end = next + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Some((Reply::Bulk(Some(buf[next..end].to_vec())), end + 2))
        }
        b'*' => {
            let len = int(head)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let mut items = Vec::with_capacity(len as usize);
            let mut at = next;
            for _ in 0..len {
                match parse_at(buf, at)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Some((Reply::Array(Some(items)), at))
        }
        other => return Err(bad(&format!("unexpected type byte {other:#04x}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_and_partial_replies() {
        let full = b"*2\r\n$3\r\nabc\r\n*2\r\n:5\r\n$-1\r\n+OK\r\n";
        let (reply, used) = parse(full).unwrap().unwrap();
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Array(Some(vec![Reply::Int(5), Reply::Bulk(None)])),
            ]))
        );
        assert_eq!(&full[used..], b"+OK\r\n");
        for cut in 0..used {
            assert!(parse(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert_eq!(parse(b"-ERR x\r\n").unwrap().unwrap().0.error(), Some("ERR x"));
    }
}
