//! A handle on each connection's socket, so that a fault can close it with
//! no answer: what a client sees when the provider (or a proxy) dies after
//! charging.

use std::any::Any;
use std::future::Future;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::Extensions;
use actix_web::http::StatusCode;
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use socket2::{SockRef, Socket};

/// A second descriptor of the connection's socket.
pub struct Connection(Socket);

/// `HttpServer::on_connect`: keeps a handle on every accepted connection.
pub fn on_connect(connection: &dyn Any, extensions: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<TcpStream>() {
        match SockRef::from(stream).try_clone() {
            Ok(socket) => {
                extensions.insert(Connection(socket));
            }
            Err(e) => tracing::warn!(error = %e, "no handle on a connection: the drop fault cannot close it"),
        }
    }
}

/// Closes the request's connection at once, without an answer. Returns false
/// when there is no handle to do it with.
pub fn abort(req: &HttpRequest) -> bool {
    let Some(Connection(socket)) = req.conn_data::<Connection>() else {
        return false;
    };
    // Linger 0: the last close resets the connection instead of lingering.
    let _ = socket.set_linger(Some(Duration::ZERO));
    let _ = socket.shutdown(Shutdown::Both);
    true
}

/// An answer whose headers promise the whole body but whose body stops
/// halfway: the server then closes the connection, and the client holds an
/// incomplete response.
pub fn cut(status: StatusCode, body: String) -> HttpResponse {
    let size = body.len() as u64;
    let half = Bytes::from(body).slice(..(size as usize) / 2);
    // The pause lets the server flush the head and the first half before the
    // error drops the connection (it drops unflushed bytes with it).
    let pause = Box::pin(actix_web::rt::time::sleep(Duration::from_millis(50)));
    HttpResponse::build(status).content_type("application/json").body(CutBody { first: Some(half), pause, size })
}

struct CutBody {
    first: Option<Bytes>,
    pause: Pin<Box<actix_web::rt::time::Sleep>>,
    size: u64,
}

impl MessageBody for CutBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.size)
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if let Some(half) = self.first.take() {
            return Poll::Ready(Some(Ok(half)));
        }
        match self.pause.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other("fake provider: cut_after_charge")))),
        }
    }
}
