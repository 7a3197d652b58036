//! WebSocket upgrades taken out of the HTTP/1 dispatcher.
//!
//! actix-http hands an upgrade request and its connection to this service instead of routing
//! it. The service admits the connection exactly as the routed path does
//! ([`crate::http::ws::admit`]), answers `101 Switching Protocols`, and then runs the session
//! over the bare socket. Why: the HTTP/1 dispatcher keeps a read and a write buffer of 8 KiB
//! each for as long as a connection lives, which is most of an idle session's memory. Here a
//! read buffer exists only while bytes are being read, and what the session writes goes
//! straight to the socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_codec::{Framed, FramedParts};
use actix_http::body::{BodySize, MessageBody};
use actix_http::h1::{self, Message};
use actix_http::header::SEC_WEBSOCKET_PROTOCOL;
use actix_http::{ConnectionType, HttpMessage, Request, Response};
use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use actix_web::ResponseError;
use actix_web_actors::ws::WebsocketContext;
use futures_util::{FutureExt, SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;

use crate::actors::session::{Joining, Session};
use crate::http::ws::{admit, Admitted};
use crate::http::ApiError;
use crate::limits::SessionSlot;
use crate::startup::AppState;

/// Bytes read from the socket at most per read; a larger message takes several reads.
const READ_CHUNK: usize = 4096;
/// How long a closed session keeps reading (and discarding) what its client still sends,
/// so that the close frame is read before the connection ends: closing a socket with unread
/// input resets it, and the client would see 1006 instead of the close code.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The connection an upgrade request arrives on.
pub type Upgraded = Framed<TcpStream, h1::Codec>;

/// Serves one upgrade request: admits it, switches protocols and runs the session until
/// either side closes. A refused request is answered with its error; a socket failure only
/// ends the connection (it is logged at debug level, as peers vanish all the time).
pub async fn serve(
    state: Arc<AppState>,
    request: (Request, Upgraded),
) -> Result<(), actix_web::Error> {
    if let Err(err) = upgrade(state, request).await {
        log::debug!("WebSocket connection: {err}");
    }
    Ok(())
}

async fn upgrade(state: Arc<AppState>, (req, framed): (Request, Upgraded)) -> io::Result<()> {
    let path = req.path().to_string();
    let board = match path.strip_prefix("/ws/") {
        Some(board) if !board.contains('/') => board,
        _ => return reject(framed, ApiError::NotFound("no such endpoint".into())).await,
    };
    let query = req.uri().query().unwrap_or_default();
    let admitted = match admit(&state, board, query, req.headers()) {
        Ok(admitted) => admitted,
        Err(err) => return reject(framed, err).await,
    };
    let identity = &admitted.identity;
    let Some(slot) = state
        .session_slots
        .take(&identity.tenant, &identity.user_id)
    else {
        let err = ApiError::RateLimited(format!(
            "a user holds at most {} sessions on this instance",
            state.config.max_sessions_per_user
        ));
        return reject(framed, err).await;
    };
    let switching = match actix_http::ws::handshake(req.head()) {
        Ok(mut builder) => {
            if let Some(encoding) = admitted.encoding {
                builder.insert_header((SEC_WEBSOCKET_PROTOCOL, encoding.protocol()));
            }
            builder.finish().drop_body()
        }
        Err(err) => {
            let err = ApiError::BadRequest(format!("not a WebSocket upgrade: {err}"));
            return reject(framed, err).await;
        }
    };
    // The request's headers share the dispatcher's 8 KiB read buffer: let both go before the
    // session starts.
    drop(req);
    run(state, admitted, slot, switching, framed).await
}

/// Answers `err` on the connection and closes it.
async fn reject(mut framed: Upgraded, err: ApiError) -> io::Result<()> {
    // What an operator looks for when a client cannot connect (README, "Troubleshooting").
    log::info!(
        "WebSocket upgrade refused ({}): {err}",
        err.status_code().as_u16()
    );
    let response: Response<_> = err.error_response().into();
    let (mut head, body) = response.into_parts();
    head.head_mut().set_connection_type(ConnectionType::Close);
    let body = body.try_into_bytes().unwrap_or_default();
    framed
        .send(Message::Item((head, BodySize::Sized(body.len() as u64))))
        .await?;
    framed.send(Message::Chunk(Some(body))).await?;
    framed.send(Message::Chunk(None)).await?;
    let parts = framed.into_parts();
    shutdown(&parts.io);
    Ok(())
}

/// Sends `101 Switching Protocols` and starts the session with its pump.
async fn run(
    state: Arc<AppState>,
    admitted: Admitted,
    slot: SessionSlot,
    switching: Response<()>,
    mut framed: Upgraded,
) -> io::Result<()> {
    framed
        .send(Message::Item((switching, BodySize::None)))
        .await?;
    // The dispatcher's buffers go here; only bytes the client sent early are kept.
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    let early = (!read_buf.is_empty()).then(|| read_buf.freeze());
    let tcp = Rc::new(io);
    let input = SocketInput {
        tcp: Rc::clone(&tcp),
        early,
        done: false,
    };
    let codec = actix_http::ws::Codec::new().max_size(state.config.max_message_bytes);
    let write_timeout = state.config.write_timeout;
    let Admitted {
        key,
        identity,
        last_seq,
        epoch,
        encoding,
        workspace,
    } = admitted;
    let encoding = encoding.unwrap_or_default();
    let joining = Joining {
        resume: (last_seq, epoch),
        workspace,
    };
    let session = Session::new(key, identity, joining, encoding, slot, state);
    let output = WebsocketContext::with_codec(session, input, codec);
    // A task of its own, sized for the session alone: the connection's HTTP/1 task, sized for
    // any request, ends here.
    actix_web::rt::spawn(pump(tcp, output, write_timeout));
    Ok(())
}

/// Runs the session to its end, then closes the socket's sending side and lingers briefly so
/// the client reads the close frame. A write that waits longer than `write_timeout` (a client
/// that stopped reading) ends the session at once: while a write waits, the session is not
/// polled, so none of its timers could end it.
///
/// Not an `async fn`: one keeps its arguments apart from the locals they move into, and the
/// output (the session actor and its WebSocket context, about 1 KiB) would be held twice in
/// every connection's task. An `async move` block uses what it captured in place.
#[allow(clippy::manual_async_fn)]
fn pump<S>(tcp: Rc<TcpStream>, mut output: S, write_timeout: Duration) -> impl Future<Output = ()>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + Unpin,
{
    async move {
        let written = write_out(&tcp, &mut output, write_timeout).await;
        // Dropping the output stops the session if it still runs.
        drop(output);
        shutdown(&tcp);
        match written {
            Ok(()) => linger(&tcp).await,
            Err(err) => log::debug!("WebSocket write failed: {err}"),
        }
    }
}

/// Reads and discards what the client sends until it closes its side or [`CLOSE_LINGER`]
/// passes.
async fn linger(tcp: &TcpStream) {
    let deadline = tokio::time::Instant::now() + CLOSE_LINGER;
    // On the heap, and only now: a buffer in the task's state would cost every connection.
    let mut sink = vec![0u8; READ_CHUNK];
    while let Ok(Ok(())) = Box::pin(tokio::time::timeout_at(deadline, tcp.readable())).await {
        match tcp.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Writes what the session sends until it ends or the socket fails. Not an `async fn`, for the
/// reason given at [`pump`]: its state is part of every connection's task.
#[allow(clippy::manual_async_fn)]
fn write_out<'a, S>(
    tcp: &'a TcpStream,
    output: &'a mut S,
    write_timeout: Duration,
) -> impl Future<Output = io::Result<()>> + 'a
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + Unpin,
{
    async move {
        while let Some(chunk) = output.next().await {
            let mut bytes = chunk.map_err(|err| io::Error::other(err.to_string()))?;
            // Let the other tasks of this thread run once before writing: frames that reach the
            // session meanwhile leave in the same write. Idle, this costs a few microseconds;
            // under load it turns many small writes into a few larger ones.
            tokio::task::yield_now().await;
            if let Some(more) = output.next().now_or_never() {
                match more {
                    Some(more) => {
                        let more = more.map_err(|err| io::Error::other(err.to_string()))?;
                        let mut joined = BytesMut::with_capacity(bytes.len() + more.len());
                        joined.extend_from_slice(&bytes);
                        joined.extend_from_slice(&more);
                        bytes = joined.freeze();
                    }
                    None => {
                        write_all(tcp, &bytes, write_timeout).await?;
                        return Ok(());
                    }
                }
            }
            write_all(tcp, &bytes, write_timeout).await?;
        }
        Ok(())
    }
}

/// Writes all of `bytes`, waiting while the socket's send buffer is full, for `timeout` at
/// most from the first wait (a write that never waits reads no clock). Not an `async fn`, as
/// [`write_out`].
#[allow(clippy::manual_async_fn)]
fn write_all<'a>(
    tcp: &'a TcpStream,
    mut bytes: &'a [u8],
    timeout: Duration,
) -> impl Future<Output = io::Result<()>> + 'a {
    async move {
        let mut deadline = None;
        while !bytes.is_empty() {
            match tcp.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                // Boxed, so that only a connection that waits holds a timer: the task's state is
                // what every idle connection pays for.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let deadline =
                        *deadline.get_or_insert_with(|| tokio::time::Instant::now() + timeout);
                    Box::pin(tokio::time::timeout_at(deadline, tcp.writable()))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")
                        })??
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// Ends the sending side so that the peer reads a clean end of stream.
fn shutdown(tcp: &TcpStream) {
    if let Err(err) = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write) {
        log::debug!("socket shutdown: {err}");
    }
}

/// What the client sends, as chunks of bytes, read only when the socket is readable: an idle
/// connection holds no read buffer.
struct SocketInput {
    /// The socket, shared with the writer.
    tcp: Rc<TcpStream>,
    /// Bytes that arrived with the upgrade request, delivered first.
    early: Option<Bytes>,
    /// The client closed its side or the socket failed.
    done: bool,
}

impl Stream for SocketInput {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(early) = self.early.take() {
            return Poll::Ready(Some(Ok(early)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            if let Err(err) = ready!(self.tcp.poll_read_ready(cx)) {
                self.done = true;
                return Poll::Ready(Some(Err(PayloadError::Io(err))));
            }
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            match self.tcp.try_read_buf(&mut buf) {
                Ok(0) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Ok(_) => return Poll::Ready(Some(Ok(buf.freeze()))),
                // A spurious wake-up: readiness was cleared, wait for the next.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(PayloadError::Io(err))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands for a session's output: a stream of a known size.
    struct Heavy {
        _weight: [u8; 1024],
    }

    impl Stream for Heavy {
        type Item = Result<Bytes, actix_web::Error>;

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(None)
        }
    }

    #[actix_web::test]
    async fn a_connection_s_task_holds_its_session_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let tcp = Rc::new(TcpStream::from_std(client).unwrap());
        let task = pump(tcp, Heavy { _weight: [0; 1024] }, Duration::from_secs(1));
        let size = std::mem::size_of_val(&task);
        assert!(
            size < 2 * 1024,
            "the task is {size} bytes for an output of 1024"
        );
    }
}
