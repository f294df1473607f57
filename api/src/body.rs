//! The JSON request body: content type, size limit, strict parsing, and the
//! canonical form that the idempotency fingerprint is computed over.
//!
//! Numbers are read as JSON Schema reads them: `5.0` and `1e3` are integers
//! (an integer is any number with a zero fractional part), so a field typed
//! `integer` in the document accepts them, and `5.0` is the same request as
//! `5`.

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ApiError, ProblemCode};

/// A parsed body and its canonical bytes (keys sorted, no white space), so
/// that `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same request.
pub struct JsonBody<T> {
    pub value: T,
    pub canonical: Vec<u8>,
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json = matches!(req.mime_type(), Ok(Some(m)) if m.essence_str() == "application/json");
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ProblemCode::UnsupportedMediaType,
                    "the body must be `application/json`",
                ));
            }
            let bytes = bytes.await.map_err(|e| {
                let too_large = matches!(e.as_error::<PayloadError>(), Some(PayloadError::Overflow))
                    || matches!(e.as_error::<JsonPayloadError>(), Some(JsonPayloadError::Overflow { .. }));
                if too_large {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ProblemCode::PayloadTooLarge,
                        "the body is larger than the limit",
                    )
                } else {
                    ApiError::bad_request(ProblemCode::MalformedJson, format!("the body could not be read: {e}"))
                }
            })?;
            let tree: Value = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::bad_request(ProblemCode::MalformedJson, format!("the body is not valid JSON: {e}"))
            })?;
            let tree = integral(tree);
            let canonical = serde_json::to_vec(&sorted(tree.clone())).expect("a JSON value serializes");
            let value = serde_json::from_value(tree).map_err(|e| {
                ApiError::bad_request(ProblemCode::InvalidBody, format!("the body does not fit the schema: {e}"))
            })?;
            Ok(JsonBody { value, canonical })
        })
    }
}

/// Sorts object keys recursively, whatever map order serde_json was built with.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The largest magnitude below which every integral `f64` converts to `i64`
/// exactly (2^63).
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// Numbers with a zero fractional part become integers, recursively: JSON
/// Schema's `integer` is a number that is integral, whatever its spelling
/// (`5`, `5.0`, `5e0`), and serde's integer fields take only the first. A
/// number out of `i64`'s range stays as it is (and an integer field refuses
/// it as too large, like any out-of-range value).
fn integral(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < I64_BOUND => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": {"y": 1, "x": [2, {"q": 1, "p": 0}]}, "a": "1.00"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"1.00","b":{"x":[2,{"p":0,"q":1}],"y":1}}"#).unwrap();
        assert_eq!(serde_json::to_vec(&sorted(a)).unwrap(), serde_json::to_vec(&sorted(b)).unwrap());
    }

    #[test]
    fn integral_numbers_are_integers_whatever_their_spelling() {
        let v: Value =
            serde_json::from_str(r#"{"q": 5.0, "e": 1e3, "z": -0.0, "f": 2.5, "big": 1e300, "a": [7.0, "7.0"]}"#)
                .unwrap();
        let v = integral(v);
        assert_eq!(v["q"], Value::from(5_i64));
        assert!(v["q"].is_i64());
        assert_eq!(v["e"], Value::from(1000_i64));
        assert_eq!(v["z"], Value::from(0_i64));
        assert!(v["f"].is_f64(), "a fraction stays a fraction");
        assert!(v["big"].is_f64(), "out of range stays as it is");
        assert_eq!(v["a"], serde_json::json!([7, "7.0"]));
        let five: Value = serde_json::from_str(r#"{"quantity": 5}"#).unwrap();
        let five_point_oh: Value = serde_json::from_str(r#"{"quantity": 5.0}"#).unwrap();
        assert_eq!(serde_json::to_vec(&integral(five)).unwrap(), serde_json::to_vec(&integral(five_point_oh)).unwrap());
    }
}
