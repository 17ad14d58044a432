//! Every API error becomes `{"error": CODE, "message": TEXT}` with the right status, here.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_protocol::api::ApiError as Body;

use crate::agents::AgentError;
use crate::auth::UserError;
use crate::auth::login::{BUSY_RETRY, LoginError};
use crate::certificates::CertifyError;
use crate::store::{StorageFailure, StoreError};
use crate::tokens::TokenError;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "not logged in; run postern login",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_many_attempts(wait_secs: u64) -> Self {
        Self {
            retry_after: Some(wait_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("too many failed logins; try again in {wait_secs} s"),
            )
        }
    }

    /// The store failed: a full disk is 507 (the client may retry once space is freed),
    /// anything else 503. The cause goes to the log, not to the client.
    pub fn storage(failure: StorageFailure, error: &dyn std::fmt::Display) -> Self {
        match failure {
            StorageFailure::Full => {
                tracing::error!(%error, "storage full");
                Self::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "storage_full",
                    "the server's storage is full",
                )
            }
            StorageFailure::Unavailable => {
                tracing::error!(%error, "storage unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the server's storage is unavailable; try again later",
                )
            }
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(Body {
                error: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            StoreError::Unstorable => Self::bad_request(e.to_string()),
            other => match other.storage_failure() {
                Some(failure) => Self::storage(failure, &other),
                None => Self::internal(other),
            },
        }
    }
}

impl From<LoginError> for ApiError {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Throttled(wait) => Self::too_many_attempts(wait.as_secs().max(1)),
            LoginError::Busy => Self {
                retry_after: Some(BUSY_RETRY.as_secs()),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            },
            LoginError::BadCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            LoginError::Store(e) => e.into(),
        }
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::NotFound(_) => Self::not_found(e.to_string()),
            AgentError::Ambiguous { .. } => {
                Self::new(StatusCode::CONFLICT, "ambiguous", e.to_string())
            }
            AgentError::InvalidTransition { .. } => {
                Self::new(StatusCode::CONFLICT, "invalid_transition", e.to_string())
            }
            // The enrollment limits only refuse agents on the gateway, never an API caller.
            AgentError::Revoked
            | AgentError::Refused(_)
            | AgentError::TooManyPending { .. }
            | AgentError::EnrollmentRate { .. } => Self::forbidden(e.to_string()),
            AgentError::Store(e) => e.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadTtl | TokenError::BadUses => Self::bad_request(e.to_string()),
            TokenError::NotFound(_) => Self::not_found(e.to_string()),
            TokenError::Store(e) => e.into(),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::BadName | UserError::WeakPassword => Self::bad_request(e.to_string()),
            UserError::NotFound(_) => Self::not_found(e.to_string()),
            UserError::LastAdmin(_) => Self::new(StatusCode::CONFLICT, "last_admin", e.to_string()),
            UserError::SelfDelete => Self::new(StatusCode::CONFLICT, "self_delete", e.to_string()),
            UserError::Store(e) => e.into(),
            UserError::Hash(e) => Self::internal(e),
        }
    }
}

impl From<CertifyError> for ApiError {
    fn from(e: CertifyError) -> Self {
        match e {
            CertifyError::NotYours(_) => Self::not_found(e.to_string()),
            CertifyError::Closed { .. } => {
                Self::new(StatusCode::CONFLICT, "wrong_state", e.to_string())
            }
            CertifyError::AgentNotApproved => Self::forbidden(e.to_string()),
            CertifyError::LoginNotAllowed { .. } | CertifyError::NoLogin => {
                Self::bad_request(e.to_string())
            }
            CertifyError::Ca(e) => Self::internal(e),
            CertifyError::Store(e) => e.into(),
        }
    }
}
