//! One client's socket: buffered reads that yield whole requests, buffered writes that go out when the client has
//! nothing more pipelined (so a pipeline of N commands costs one write, not N).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

use crate::frame::{self, Frame, Limits, Proto, ProtocolError};

/// Why reading a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes can never form a valid request.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket failed, or the peer closed it in the middle of a request.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A client connection.
#[derive(Debug)]
pub struct Connection {
    stream: BufWriter<TcpStream>,
    buffer: BytesMut,
    limits: Limits,
    /// The protocol replies are encoded in.
    pub proto: Proto,
    encoded: Vec<u8>,
    /// What was parsed of a request still arriving.
    partial: frame::Partial,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(socket: TcpStream, limits: Limits) -> Self {
        Self {
            stream: BufWriter::new(socket),
            buffer: BytesMut::with_capacity(4 * 1024),
            limits,
            proto: Proto::Resp2,
            encoded: Vec::new(),
            partial: frame::Partial::default(),
        }
    }

    /// The next request, or `None` when the peer closed the connection between requests. Buffered replies are
    /// flushed before waiting on the socket, so pipelined requests are answered in one write.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.buffered_frame()? {
                return Ok(Some(frame));
            }
            self.stream.flush().await?;
            if self.stream.get_mut().read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed mid-request").into())
                };
            }
        }
    }

    /// The next request if the client has already sent all of it, without touching the socket: how the connection
    /// finds out that more of a pipeline is waiting.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let Some((frame, used)) = frame::parse(&self.buffer, &self.limits, &mut self.partial)? else {
            return Ok(None);
        };
        self.buffer.advance(used);
        Ok(Some(frame))
    }

    /// Resolves when the peer closes the connection (or the socket fails). Bytes that arrive meanwhile — requests
    /// pipelined behind a blocking one — are kept for [`Connection::read_frame`]; once a whole request's worth is
    /// waiting, this stops reading and never resolves, so a blocked client cannot make the buffer grow.
    pub async fn closed(&mut self) {
        loop {
            if self.buffer.len() > self.limits.max_request_bytes {
                std::future::pending::<()>().await;
            }
            match self.stream.get_mut().read_buf(&mut self.buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The limits requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Queues a reply; it is sent at the next flush.
    pub async fn write_frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        self.encoded.clear();
        frame.encode(self.proto, &mut self.encoded);
        self.stream.write_all(&self.encoded).await
    }

    /// Sends every queued reply.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush().await
    }
}
