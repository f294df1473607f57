//! The JSON request body: content type, size limit, strict parsing, and the
//! canonical form that the idempotency fingerprint is computed over.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing() {
        let a: Value = serde_json::from_str(r#"{"b": {"y": 1, "x": [2, {"q": 1, "p": 0}]}, "a": "1.00"}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":"1.00","b":{"x":[2,{"p":0,"q":1}],"y":1}}"#).unwrap();
        assert_eq!(serde_json::to_vec(&sorted(a)).unwrap(), serde_json::to_vec(&sorted(b)).unwrap());
    }
}
