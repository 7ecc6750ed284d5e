//! A worker's consume stream: credits out, jobs in, acks/nacks/extends out, results in — on one bidirectional stream.

use spool_proto::v1::{self as proto, consume_request::Kind, consume_response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::{Client, ClientError, Nack};

/// What the server sent on a consume stream.
#[derive(Debug)]
pub enum Event {
    /// A leased job: the worker holds it (one credit) until it acks or nacks it on this stream.
    Job(Box<proto::Job>),
    /// The result of the worker message with this request id; for an extend, `Ok(Some(new lease end))`.
    Result {
        /// The id the worker's message carried (as returned by [`Consumer::ack`] and friends).
        request_id: u64,
        /// The outcome.
        outcome: Result<Option<u64>, ClientError>,
    },
}

/// One consume stream. Dropping it ends the stream; the jobs it held return to their queues when their leases run
/// out.
#[derive(Debug)]
pub struct Consumer {
    outbound: mpsc::Sender<proto::ConsumeRequest>,
    inbound: Streaming<proto::ConsumeResponse>,
    next_request_id: u64,
}

impl Consumer {
    pub(crate) async fn open(client: &Client, queues: &[&str], credits: u32) -> Result<Consumer, ClientError> {
        // Buffer enough for a worker's burst of settlements; beyond that, `send` waits for the stream.
        let (outbound, rx) = mpsc::channel(64);
        let start = proto::ConsumeRequest {
            request_id: 0,
            kind: Some(Kind::Start(proto::ConsumeStart {
                queues: queues.iter().map(|q| q.to_string()).collect(),
                weights: Vec::new(),
                credits,
            })),
        };
        outbound.send(start).await.expect("the receiver is alive");
        let request = client.request(ReceiverStream::new(rx));
        let inbound = client.rpc.clone().consume(request).await?.into_inner();
        Ok(Consumer {
            outbound,
            inbound,
            next_request_id: 1,
        })
    }

    /// The next job or result; `None` when the server ended the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        let message = match self.inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return None,
            Err(status) => return Some(Err(status.into())),
        };
        Some(Ok(match message.kind {
            Some(consume_response::Kind::Job(job)) => Event::Job(Box::new(job)),
            Some(consume_response::Kind::Result(r)) => Event::Result {
                request_id: r.request_id,
                outcome: match r.error {
                    Some(e) => Err(e.into()),
                    None => Ok(r.lease_expires_at_ms),
                },
            },
            None => Event::Result {
                request_id: 0,
                outcome: Err(ClientError::Rpc {
                    status: tonic::Code::Internal,
                    message: "the server sent an empty consume message".into(),
                }),
            },
        }))
    }

    async fn send(&mut self, kind: Kind) -> Result<u64, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let message = proto::ConsumeRequest {
            request_id,
            kind: Some(kind),
        };
        self.outbound.send(message).await.map_err(|_| ClientError::Rpc {
            status: tonic::Code::Cancelled,
            message: "the consume stream has ended".into(),
        })?;
        Ok(request_id)
    }

    /// Acks a job; returns the request id its result will carry.
    pub async fn ack(&mut self, id: &str, token: u64) -> Result<u64, ClientError> {
        self.send(Kind::Ack(proto::AckRequest {
            id: id.to_string(),
            token,
        }))
        .await
    }

    /// Nacks a job; returns the request id its result will carry.
    pub async fn nack(&mut self, id: &str, token: u64, nack: Nack, error: Option<String>) -> Result<u64, ClientError> {
        self.send(Kind::Nack(nack.request(id, token, error))).await
    }

    /// Extends a job's lease; returns the request id its result will carry.
    pub async fn extend(&mut self, id: &str, token: u64, lease_ms: Option<u64>) -> Result<u64, ClientError> {
        self.send(Kind::Extend(proto::ExtendRequest {
            id: id.to_string(),
            token,
            lease_ms,
        }))
        .await
    }

    /// Grants `credits` more; returns the request id its result will carry.
    pub async fn grant(&mut self, credits: u32) -> Result<u64, ClientError> {
        self.send(Kind::Credit(proto::Credit { credits })).await
    }
}
