//! Values read from the database, checked: one this code does not know (a
//! newer schema, a corrupted row) is an error, never a guess.

use crate::money::Currency;
use crate::{Error, Result};

/// A currency code read from a row.
pub fn currency(code: &str) -> Result<Currency> {
    code.parse().map_err(|_| Error::unknown("currency", code))
}
