//! The client against the fake provider, started as a separate process.

mod authentication;
mod cancel;
mod capture;
mod durability;
mod faults;
mod idempotency;
mod listing;
mod payments;
mod refunds;
mod support;
mod webhooks;
