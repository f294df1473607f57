//! The payment protocol as a state machine, checked exhaustively with
//! stateright: card charges and card refunds at the payment provider
//! (`service::effects`), their crash points, the completer, the provider's
//! webhooks, and the relay and inventory consumer that carry their events.
//! A pure abstraction: it shares no code with the service, so that a check
//! is of the design, and each action is named after the function or crash
//! point it stands for (docs/model.md maps them to the code).

pub mod api;
pub mod bounds;
pub mod check;
pub mod completer;
pub mod describe;
pub mod ledger;
pub mod model;
pub mod pipeline;
pub mod properties;
pub mod provider;
pub mod sending;
pub mod state;
