//! Money as decimal strings, validated against the currency's minor unit.
//!
//! Amounts cross the API as strings ("12.50") and live as `rust_decimal` in
//! memory and NUMERIC(24, 4) in PostgreSQL: never a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The largest amount a single request may move, in major units.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// Currencies the ledger accepts, with their ISO 4217 minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    USD,
    EUR,
    GBP,
    CHF,
    CAD,
    AUD,
    SEK,
    NOK,
    DKK,
    PLN,
    JPY,
    KRW,
}

impl Currency {
    /// Every supported currency, in the order the API documents them.
    pub const ALL: [Currency; 12] = [
        Currency::USD,
        Currency::EUR,
        Currency::GBP,
        Currency::CHF,
        Currency::CAD,
        Currency::AUD,
        Currency::SEK,
        Currency::NOK,
        Currency::DKK,
        Currency::PLN,
        Currency::JPY,
        Currency::KRW,
    ];

    /// Digits after the decimal point the currency allows.
    pub fn scale(self) -> u32 {
        match self {
            Currency::JPY | Currency::KRW => 0,
            _ => 2,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::GBP => "GBP",
            Currency::CHF => "CHF",
            Currency::CAD => "CAD",
            Currency::AUD => "AUD",
            Currency::SEK => "SEK",
            Currency::NOK => "NOK",
            Currency::DKK => "DKK",
            Currency::PLN => "PLN",
            Currency::JPY => "JPY",
            Currency::KRW => "KRW",
        }
    }

    /// Brings a stored amount (scale 4 in the database) to the currency's
    /// scale, so that "12.5000" reads back as "12.50".
    pub fn normalize(self, amount: Decimal) -> Decimal {
        let mut a = amount;
        a.rescale(self.scale());
        a
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "USD" => Currency::USD,
            "EUR" => Currency::EUR,
            "GBP" => Currency::GBP,
            "CHF" => Currency::CHF,
            "CAD" => Currency::CAD,
            "AUD" => Currency::AUD,
            "SEK" => Currency::SEK,
            "NOK" => Currency::NOK,
            "DKK" => Currency::DKK,
            "PLN" => Currency::PLN,
            "JPY" => Currency::JPY,
            "KRW" => Currency::KRW,
            _ => return Err(AmountError::UnknownCurrency(s.to_owned())),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a supported currency")]
    UnknownCurrency(String),
    #[error("`{0}` is not a decimal amount such as \"12.50\"")]
    Malformed(String),
    #[error("the amount must be greater than zero")]
    NotPositive,
    #[error("{currency} allows at most {scale} decimal places")]
    TooPrecise { currency: Currency, scale: u32 },
    #[error("the amount exceeds the maximum of {MAX_AMOUNT} per request")]
    TooLarge,
}

/// Parses a positive amount in `currency`, refusing anything a client could
/// mean in two ways: exponents, signs, blanks, extra decimals.
pub fn parse_amount(text: &str, currency: Currency) -> Result<Decimal, AmountError> {
    let malformed = || AmountError::Malformed(text.chars().take(40).collect());
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if text.starts_with('-') && int.len() > 1 && int[1..].bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotPositive);
    }
    let digits_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(int) || frac.is_some_and(|f| !digits_ok(f)) || int.len() > 16 {
        return Err(malformed());
    }
    let frac_len = frac.map_or(0, str::len);
    if frac_len > currency.scale() as usize {
        // trailing zeros beyond the scale still say more than the currency can hold
        return Err(AmountError::TooPrecise { currency, scale: currency.scale() });
    }
    let value = Decimal::from_str(text).map_err(|_| malformed())?;
    if value <= Decimal::ZERO {
        return Err(AmountError::NotPositive);
    }
    if value > MAX_AMOUNT {
        return Err(AmountError::TooLarge);
    }
    Ok(currency.normalize(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_amounts_within_the_minor_unit() {
        assert_eq!(parse_amount("12.5", Currency::USD).unwrap().to_string(), "12.50");
        assert_eq!(parse_amount("12", Currency::USD).unwrap().to_string(), "12.00");
        assert_eq!(parse_amount("1500", Currency::JPY).unwrap().to_string(), "1500");
    }

    #[test]
    fn refuses_what_could_be_misread() {
        for bad in ["", "1e3", "+1", " 1", "1.", ".5", "1,00", "abc", "0x10", "NaN"] {
            assert!(matches!(parse_amount(bad, Currency::USD), Err(AmountError::Malformed(_))), "{bad}");
        }
        assert_eq!(parse_amount("-1", Currency::USD), Err(AmountError::NotPositive));
        assert_eq!(parse_amount("0.00", Currency::USD), Err(AmountError::NotPositive));
        assert!(matches!(parse_amount("1.001", Currency::USD), Err(AmountError::TooPrecise { .. })));
        assert!(matches!(parse_amount("1.0", Currency::JPY), Err(AmountError::TooPrecise { .. })));
        assert_eq!(parse_amount("1000000000.01", Currency::USD), Err(AmountError::TooLarge));
        assert_eq!(parse_amount("1000000000", Currency::USD).unwrap().to_string(), "1000000000.00");
    }
}
