//! Schemas shared by several resources' wire types.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// The `Currency` schema: every code `ledger::Currency` accepts, listed from
/// the domain's own list so the two cannot drift. Wire fields hold a
/// `ledger::Currency` (serialized as its code) and name this as their
/// `value_type`.
pub struct Currency;

impl utoipa::PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Currencies the ledger accepts, with their ISO 4217 minor units."))
            .enum_values(Some(ledger::Currency::ALL.iter().map(|c| c.code())))
            .into()
    }
}

impl utoipa::ToSchema for Currency {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Currency")
    }
}
