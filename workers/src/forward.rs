//! Copies a message into one named queue, confirmed: how a dead letter is
//! redriven and how a retired queue's messages move to its successor.

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};

use crate::{within, Error};

/// Publishes a copy of `delivery` (same body, `message_id`, type and content
/// type, persistent) into `queue` only, through the default exchange so that
/// no other queue gets one, mandatory; returns once the broker confirmed
/// that the queue took it. `publisher` is in confirm mode. Only then may the
/// original be acked: a crash in between leaves a duplicate, never a loss.
pub async fn copy_into(publisher: &Channel, delivery: &Delivery, queue: &str) -> Result<(), Error> {
    let p = &delivery.properties;
    let mut props = BasicProperties::default().with_delivery_mode(2);
    if let Some(id) = p.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(kind) = p.kind() {
        props = props.with_type(kind.clone());
    }
    if let Some(ct) = p.content_type() {
        props = props.with_content_type(ct.clone());
    }
    // the request it was for, and its trace (`request_id`)
    if let Some(c) = p.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(h) = p.headers() {
        if let Some(tp) = h.inner().get(crate::request_id::TRACEPARENT) {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(crate::request_id::TRACEPARENT.into(), tp.clone());
            props = props.with_headers(headers);
        }
    }
    let confirm = within(
        "publish",
        publisher.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &delivery.data,
            props,
        ),
    )
    .await?;
    let confirmation = within("publisher confirm", confirm).await?;
    if !confirmation.is_ack() || confirmation.take_message().is_some() {
        return Err(Error::NotTaken(queue.to_owned()));
    }
    Ok(())
}
