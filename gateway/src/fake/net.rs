//! A handle on each connection's socket, so that a fault can close it with
//! no answer: what a client sees when the provider (or a proxy) dies after
//! charging.

use std::any::Any;
use std::net::Shutdown;
use std::time::Duration;

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use actix_web::HttpRequest;
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
