//! Query-string parameters with errors that name the parameter and the fix.

use std::collections::HashMap;
use std::str::FromStr;

use custody_model::{Timestamp, WorkspaceName};

use crate::error::ApiError;

pub struct Params {
    values: HashMap<String, String>,
}

impl Params {
    /// Takes the raw pairs; refuses repeated and unknown parameters.
    pub fn new(pairs: Vec<(String, String)>, known: &[&str]) -> Result<Self, ApiError> {
        let mut values = HashMap::new();
        for (name, value) in pairs {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::bad_request(
                    "unknown_parameter",
                    format!("unknown query parameter `{name}`; this endpoint takes: {}", known.join(", ")),
                ));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::bad_request("invalid_value", format!("query parameter `{name}` is given twice")));
            }
        }
        Ok(Self { values })
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.values.get(name).map(String::as_str).ok_or_else(|| {
            ApiError::bad_request("missing_parameter", format!("the query parameter `{name}` is required"))
        })
    }

    pub fn workspace(&self) -> Result<Option<WorkspaceName>, ApiError> {
        self.values
            .get("workspace")
            .map(|w| {
                WorkspaceName::parse(w).map_err(|m| ApiError::bad_request("invalid_value", format!("workspace: {m}")))
            })
            .transpose()
    }

    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.values
            .get(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    ApiError::bad_request(
                        "invalid_value",
                        format!("`{name}` must be a non-negative integer, got `{v}`"),
                    )
                })
            })
            .transpose()
    }

    pub fn required_number<T: FromStr>(&self, name: &str) -> Result<T, ApiError> {
        self.required(name)?;
        self.number(name)?.ok_or_else(|| ApiError::bad_request("missing_parameter", name.to_owned()))
    }

    pub fn timestamp(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        self.values
            .get(name)
            .map(|v| Timestamp::parse(v).map_err(|m| ApiError::bad_request("invalid_value", format!("{name}: {m}"))))
            .transpose()
    }

    pub fn parsed<T>(
        &self,
        name: &str,
        parse: impl Fn(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, ApiError> {
        self.values
            .get(name)
            .map(|v| {
                parse(v).ok_or_else(|| {
                    ApiError::bad_request("invalid_value", format!("`{name}` must be one of {expected}, got `{v}`"))
                })
            })
            .transpose()
    }
}

/// The query string as name/value pairs; a malformed one is a JSON 400.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(pairs)| QueryPairs(pairs))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}
