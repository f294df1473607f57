//! The broker's nodes. `AMQP_URL` may list several nodes of one RabbitMQ
//! cluster, comma-separated; a session connects to the first that answers.
//!
//! Each process remembers the node its last session used and starts there,
//! so a healthy node keeps its clients, and a node that died costs the next
//! session one failed connect before it moves on. Nothing here needs to
//! know which node leads a queue: quorum queues are reachable from every
//! node of the cluster, and what a dead node had not confirmed is still
//! unpublished in the outbox, so the relay sends it again through the next.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::Error;

/// How long one node gets to accept a connection: a node that vanished
/// without refusing (a dead host) must not hold up the move to the next.
const PER_NODE: Duration = Duration::from_secs(5);

/// The node the last successful session of this process used.
static CURRENT: AtomicUsize = AtomicUsize::new(0);

/// The nodes of `amqp_url`, in the order given.
pub fn list(amqp_url: &str) -> Vec<&str> {
    amqp_url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// A connection to the first node of `amqp_url` that answers, trying each
/// once, starting with the one used last.
pub async fn connect(amqp_url: &str) -> Result<Connection, Error> {
    let nodes = list(amqp_url);
    if nodes.is_empty() {
        return Err(Error::Setting { setting: "AMQP_URL", detail: "no broker node given".into() });
    }
    let start = CURRENT.load(Ordering::Relaxed);
    let mut last = None;
    for i in 0..nodes.len() {
        let at = (start + i) % nodes.len();
        let url = nodes[at];
        match tokio::time::timeout(PER_NODE, Connection::connect(url, ConnectionProperties::default())).await {
            Ok(Ok(conn)) => {
                if at != start % nodes.len() {
                    tracing::warn!(node = %without_password(url), "moved to another broker node");
                }
                CURRENT.store(at, Ordering::Relaxed);
                return Ok(conn);
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %without_password(url), error = %e, "broker node refused the connection");
                last = Some(Error::Amqp(e));
            }
            Err(_) => {
                tracing::warn!(node = %without_password(url), "broker node did not answer");
                last = Some(Error::Timeout("connect"));
            }
        }
    }
    Err(last.expect("at least one node was tried"))
}

/// `url` for a log line: the password is not logged.
fn without_password(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) if rest.contains('@') => {
            let user = rest.split(['@', ':']).next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_nodes_is_split_on_commas() {
        assert_eq!(
            list(" amqp://a:5672/%2f , amqp://b:5672/%2f,,amqp://c/%2f "),
            ["amqp://a:5672/%2f", "amqp://b:5672/%2f", "amqp://c/%2f"]
        );
        assert_eq!(list("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10").len(), 1);
    }

    #[test]
    fn passwords_stay_out_of_the_logs() {
        assert_eq!(without_password("amqp://guest:secret@h:5672/v"), "amqp://guest@h:5672/v");
        assert_eq!(without_password("amqp://h:5672/v"), "amqp://h:5672/v");
    }
}
