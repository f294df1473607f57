//! The id of the request a piece of work is done for, carried beside the
//! work rather than through every signature: the API runs each request
//! inside [`scope`], and [`crate::outbox::enqueue`] stores [`current`] on
//! each event it writes, from where the relay sends it on with the message.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` with `request_id` as the current request's id.
pub async fn scope<F: Future>(request_id: String, work: F) -> F::Output {
    REQUEST_ID.scope(request_id, work).await
}

/// The current request's id, when the work runs inside [`scope`].
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}
