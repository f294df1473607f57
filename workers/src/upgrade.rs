//! Queues an older version declared, retired without losing a message.
//!
//! RabbitMQ refuses to redeclare a queue with other arguments
//! (PRECONDITION_FAILED), and the consumers' queues changed theirs
//! (at-least-once dead-lettering, see `topology`). So the new queues have
//! new names, and every process, after declaring the topology, retires the
//! old ones: it unbinds each from the topic exchange (no new copies reach
//! it), moves every message it holds into its successor (a confirmed copy,
//! then the ack), and deletes it once it is empty and nobody consumes it
//! (looked up first: RabbitMQ 3.10 refuses `if-empty`/`if-unused` deletes of
//! quorum queues, closing the connection).
//! One process at a time does this (an exclusive lock queue); the others
//! go on. An old worker still consuming keeps its queue alive, unbound, and
//! a later start retires it. A copy moved twice (a crash between the copy
//! and the ack) is absorbed like any duplicate (inbox, email claim).
//!
//! So `make run`, or a deploy, on a broker that has the older queues needs
//! nothing by hand: stop the old workers, start the new ones, and the
//! backlog moves over and the old queues disappear.

use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use crate::topology::Names;
use crate::{forward, within, Error};

/// The AMQP reply code of a channel or connection error, if it is one.
pub fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
        _ => None,
    }
}

const NOT_FOUND: u16 = 404;
const RESOURCE_LOCKED: u16 = 405;

/// A channel of its own for a call that may fail with a channel error
/// (which closes the channel it happened on).
async fn scratch(conn: &Connection) -> Result<Channel, Error> {
    within("open a channel", conn.create_channel()).await
}

async fn exists(conn: &Connection, queue: &str) -> Result<bool, Error> {
    let ch = scratch(conn).await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    match within("look for a queue", ch.queue_declare(queue.into(), passive, FieldTable::default())).await {
        Ok(_) => {
            let _ = ch.close(200, "".into()).await;
            Ok(true)
        }
        Err(Error::Amqp(e)) if reply_code(&e) == Some(NOT_FOUND) => {
            // the usual answer: no older version left this queue behind
            tracing::debug!(queue, "no such queue (expected: nothing to retire)");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Ready messages and consumers of a queue that exists.
async fn counts(conn: &Connection, queue: &str) -> Result<(u32, u32), Error> {
    let ch = scratch(conn).await?;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let q = within("count a queue", ch.queue_declare(queue.into(), passive, FieldTable::default())).await?;
    let _ = ch.close(200, "".into()).await;
    Ok((q.message_count(), q.consumer_count()))
}

/// Retires the queues of older versions, if any, after the topology was
/// declared; a failure is logged and left to a later start, so that it
/// never keeps a worker from its own queue.
pub async fn retire(conn: &Connection, names: &Names) {
    match retire_old_queues(conn, names).await {
        Ok(0) => {}
        Ok(moved) => tracing::info!(moved, "messages moved from queues of an older version"),
        Err(e) => tracing::warn!(error = %e, "queues of an older version not retired; a later start tries again"),
    }
}

/// Retires the queues of older versions that still exist; returns how many
/// messages moved to their successors. The successors must be declared.
pub async fn retire_old_queues(conn: &Connection, names: &Names) -> Result<u64, Error> {
    let lock = scratch(conn).await?;
    let exclusive = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    match within(
        "take the upgrade lock",
        lock.queue_declare(names.upgrade_lock.as_str().into(), exclusive, FieldTable::default()),
    )
    .await
    {
        Ok(_) => {}
        // Another process is retiring them right now.
        Err(Error::Amqp(e)) if reply_code(&e) == Some(RESOURCE_LOCKED) => {
            tracing::debug!("the upgrade lock is held by another process, which retires the older queues");
            return Ok(0);
        }
        Err(e) => return Err(e),
    }
    let moved = drain_and_delete(conn, &lock, names).await;
    // An exclusive queue lives as long as its connection, which goes on consuming.
    let unlock = async {
        let ch = scratch(conn).await?;
        within(
            "release the upgrade lock",
            ch.queue_delete(names.upgrade_lock.as_str().into(), QueueDeleteOptions::default()),
        )
        .await?;
        let _ = ch.close(200, "".into()).await;
        Ok::<_, Error>(())
    };
    let unlocked = unlock.await;
    let _ = lock.close(200, "".into()).await;
    let moved = moved?;
    unlocked?;
    Ok(moved)
}

async fn drain_and_delete(conn: &Connection, lock: &Channel, names: &Names) -> Result<u64, Error> {
    let mut moved = 0;
    for old in names.retired() {
        if !exists(conn, &old.name).await? {
            continue;
        }
        for event in old.events {
            within(
                "unbind a retired queue",
                lock.queue_unbind(
                    old.name.as_str().into(),
                    names.events.as_str().into(),
                    (*event).into(),
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        let publisher = scratch(conn).await?;
        within("confirm mode", publisher.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut n = 0u64;
        while let Some(m) =
            within("basic.get", lock.basic_get(old.name.as_str().into(), BasicGetOptions { no_ack: false })).await?
        {
            forward::copy_into(&publisher, &m.delivery, old.successor).await?;
            within("ack", m.delivery.acker.ack(BasicAckOptions::default())).await?;
            n += 1;
        }
        let _ = publisher.close(200, "".into()).await;
        moved += n;
        // RabbitMQ 3.10 refuses `if-empty` and `if-unused` deletes of quorum
        // queues (a connection error), so look first: under the lock nobody
        // else takes from it, and unbound nothing new reaches it.
        let (messages, consumers) = counts(conn, &old.name).await?;
        if messages == 0 && consumers == 0 {
            let delete = scratch(conn).await?;
            within(
                "delete a retired queue",
                delete.queue_delete(old.name.as_str().into(), QueueDeleteOptions::default()),
            )
            .await?;
            let _ = delete.close(200, "".into()).await;
            tracing::info!(queue = %old.name, successor = old.successor, moved = n, "retired a queue of an older version");
        } else {
            tracing::warn!(
                queue = %old.name, successor = old.successor, moved = n, messages, consumers,
                "a queue of an older version is still consumed; unbound and drained, it is retired at a later start"
            );
        }
    }
    Ok(moved)
}
