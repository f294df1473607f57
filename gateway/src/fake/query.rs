//! The subset of Stripe's search query language the fake answers:
//! `field:value` clauses joined by `AND`, where a field is `metadata['key']`,
//! `status`, `currency` or `amount`, and values are quoted with `'` or `"`
//! (backslash escapes) or bare.

use crate::objects::Payment;

#[derive(Debug, PartialEq, Eq)]
pub enum Field {
    Metadata(String),
    Status,
    Currency,
    Amount,
}

/// Why a search query is refused; the message becomes the 400's text, as
/// Stripe answers a query it cannot parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("a clause must start with a field name")]
    NoField,
    #[error("field `{0}` is not supported")]
    Unsupported(String),
    #[error("expected AND between clauses, found `{0}`")]
    NotAnd(String),
    #[error("expected `{wanted}`, found {found:?}")]
    Expected { wanted: char, found: Option<char> },
    #[error("expected a quoted string, found {0:?}")]
    NotQuoted(Option<char>),
    #[error("unfinished escape")]
    UnfinishedEscape,
    #[error("unterminated string")]
    Unterminated,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Clause {
    pub field: Field,
    pub value: String,
}

pub fn parse(query: &str) -> Result<Vec<Clause>, QueryError> {
    let mut chars = query.trim().chars().peekable();
    let mut clauses = Vec::new();
    loop {
        let name: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
        let field = match name.as_str() {
            "metadata" => {
                expect(&mut chars, '[')?;
                let key = quoted(&mut chars)?;
                expect(&mut chars, ']')?;
                Field::Metadata(key)
            }
            "status" => Field::Status,
            "currency" => Field::Currency,
            "amount" => Field::Amount,
            "" => return Err(QueryError::NoField),
            other => return Err(QueryError::Unsupported(other.to_owned())),
        };
        expect(&mut chars, ':')?;
        let value = match chars.peek() {
            Some('\'' | '"') => quoted(&mut chars)?,
            _ => std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect(),
        };
        clauses.push(Clause { field, value });
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(clauses);
        }
        let joiner: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())).collect();
        if joiner != "AND" {
            return Err(QueryError::NotAnd(joiner));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    }
}

pub fn matches(clauses: &[Clause], payment: &Payment) -> bool {
    clauses.iter().all(|clause| match &clause.field {
        Field::Metadata(key) => payment.metadata.get(key) == Some(&clause.value),
        Field::Status => {
            serde_json::to_value(payment.status).ok().and_then(|v| v.as_str().map(str::to_owned))
                == Some(clause.value.clone())
        }
        Field::Currency => payment.currency == clause.value.to_ascii_lowercase(),
        Field::Amount => clause.value.parse() == Ok(payment.amount),
    })
}

fn expect(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, wanted: char) -> Result<(), QueryError> {
    match chars.next() {
        Some(c) if c == wanted => Ok(()),
        found => Err(QueryError::Expected { wanted, found }),
    }
}

fn quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String, QueryError> {
    let quote = match chars.next() {
        Some(q @ ('\'' | '"')) => q,
        other => return Err(QueryError::NotQuoted(other)),
    };
    let mut value = String::new();
    loop {
        match chars.next() {
            Some('\\') => value.push(chars.next().ok_or(QueryError::UnfinishedEscape)?),
            Some(c) if c == quote => return Ok(value),
            Some(c) => value.push(c),
            None => return Err(QueryError::Unterminated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_metadata_clauses_with_escapes() {
        let clauses =
            parse(r#"metadata['tenant_id']:'t1' AND metadata["order_id"]:'it\'s\\' AND status:succeeded"#).unwrap();
        assert_eq!(
            clauses,
            vec![
                Clause { field: Field::Metadata("tenant_id".into()), value: "t1".into() },
                Clause { field: Field::Metadata("order_id".into()), value: r"it's\".into() },
                Clause { field: Field::Status, value: "succeeded".into() },
            ]
        );
    }

    #[test]
    fn refuses_what_it_does_not_answer() {
        assert!(parse("metadata['a']:'b' OR metadata['c']:'d'").is_err());
        assert!(parse("customer:'cus_1'").is_err());
        assert!(parse("metadata['a':'b'").is_err());
        assert!(parse("").is_err());
    }
}
