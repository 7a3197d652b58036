//! HTTP surfaces: the WebSocket upgrade, the backend API, health, metrics, dev tokens and static
//! assets, and the one
//! error type they answer with.

pub mod api;
pub mod assets;
pub mod dev;
pub mod health;
pub mod upgrade;
pub mod ws;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::backend::BackendError;
use crate::protocol::{ErrorCode, FrameError};

/// An HTTP error, answered as `{"error":{"code","message"}}` with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: nothing here.
    #[error("{0}")]
    NotFound(String),
    /// 409: a version check failed; carries the current item or value.
    #[error("{0}")]
    Conflict(String, Option<Value>),
    /// 410: what was asked for is no longer kept.
    #[error("{0}")]
    Gone(String),
    /// 413: the body is too large or a limit was reached.
    #[error("{0}")]
    TooLarge(String),
    /// 429: too many requests.
    #[error("{0}")]
    RateLimited(String),
    /// 503: a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a fault of our own.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(..) => "conflict",
            ApiError::Gone(_) => "gone",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> Self {
        err.to_frame_error().into()
    }
}

impl From<FrameError> for ApiError {
    fn from(err: FrameError) -> Self {
        let message = err.message;
        match err.code {
            ErrorCode::BadRequest => ApiError::BadRequest(message),
            ErrorCode::Forbidden => ApiError::Forbidden(message),
            ErrorCode::NotFound => ApiError::NotFound(message),
            ErrorCode::Conflict => ApiError::Conflict(message, err.current),
            ErrorCode::RateLimited => ApiError::RateLimited(message),
            ErrorCode::TooLarge => ApiError::TooLarge(message),
            ErrorCode::Unavailable => ApiError::Unavailable(message),
            ErrorCode::Internal => ApiError::Internal(message),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let ApiError::Conflict(_, Some(current)) = self {
            error["current"] = current.clone();
        }
        HttpResponse::build(self.status_code()).json(json!({ "error": error }))
    }
}
