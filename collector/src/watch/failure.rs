//! What a watch error means: the `reason` label it is counted under, the HTTP status it
//! carried, and whether retrying soon can help (a refusal needs an operator).
use kube::runtime::watcher;

/// Why a watch failed; each failure is followed by a retry after the backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorReason {
    /// A list request failed (unreachable, refused, 5xx, forbidden).
    ListFailed = 0,
    /// A watch request failed to start.
    WatchFailed = 1,
    /// An open watch stream broke (connection cut, bad frame).
    StreamFailed = 2,
    /// 410 Gone: the resourceVersion left the API server's window; the next step is a
    /// relist.
    Expired = 3,
    /// Another ERROR event on an open watch.
    ErrorEvent = 4,
    /// A list or event without a resourceVersion.
    NoResourceVersion = 5,
}

impl ErrorReason {
    pub const ALL: [Self; 6] = [
        Self::ListFailed,
        Self::WatchFailed,
        Self::StreamFailed,
        Self::Expired,
        Self::ErrorEvent,
        Self::NoResourceVersion,
    ];

    pub fn of(error: &watcher::Error) -> Self {
        match error {
            watcher::Error::InitialListFailed(_) => Self::ListFailed,
            watcher::Error::WatchStartFailed(_) => Self::WatchFailed,
            watcher::Error::WatchFailed(_) => Self::StreamFailed,
            watcher::Error::WatchError(status) if status.code == 410 => Self::Expired,
            watcher::Error::WatchError(_) => Self::ErrorEvent,
            watcher::Error::NoResourceVersion => Self::NoResourceVersion,
        }
    }

    /// The `reason` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListFailed => "list_failed",
            Self::WatchFailed => "watch_failed",
            Self::StreamFailed => "stream_failed",
            Self::Expired => "expired",
            Self::ErrorEvent => "error_event",
            Self::NoResourceVersion => "no_resource_version",
        }
    }
}

/// How long a failure is likely to last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// 401, 403, 404: the API server answers and refuses; it will until someone changes
    /// RBAC, credentials or the API server's version. Retried at the refusal cap.
    Refused,
    /// 410 Gone: routine, the watcher relists.
    Expired,
    /// Anything else (unreachable, 5xx, 429, a broken stream): retried as before.
    Transient,
}

/// One watch error, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: ErrorReason,
    /// The HTTP status, when the API server answered.
    pub status: Option<u16>,
    pub class: Class,
    /// The error as kube-runtime words it.
    pub message: String,
    /// What the API server said (its Status message), else the error.
    pub detail: String,
}

impl Failure {
    pub fn of(error: &watcher::Error) -> Self {
        let answer = match error {
            watcher::Error::InitialListFailed(e)
            | watcher::Error::WatchStartFailed(e)
            | watcher::Error::WatchFailed(e) => match e {
                kube::Error::Api(status) => Some(status),
                _ => None,
            },
            watcher::Error::WatchError(status) => Some(status),
            watcher::Error::NoResourceVersion => None,
        };
        let status = answer.map(|s| s.code);
        let class = match status {
            Some(401 | 403 | 404) => Class::Refused,
            Some(410) => Class::Expired,
            _ => Class::Transient,
        };
        Self {
            reason: ErrorReason::of(error),
            status,
            class,
            message: error.to_string(),
            detail: answer.map_or_else(|| error.to_string(), |s| s.message.clone()),
        }
    }

    /// Whether `self` is the same trouble as `other`, for logging once per change.
    pub fn same_state(&self, other: &Self) -> bool {
        self.status == other.status && self.class == other.class
    }

    /// The HTTP status with its reason phrase (`403 Forbidden`), or `no answer`.
    pub fn status_text(&self) -> String {
        match self.status {
            Some(code) => {
                let phrase = match code {
                    401 => " Unauthorized",
                    403 => " Forbidden",
                    404 => " Not Found",
                    410 => " Gone",
                    429 => " Too Many Requests",
                    500 => " Internal Server Error",
                    503 => " Service Unavailable",
                    _ => "",
                };
                format!("{code}{phrase}")
            }
            None => "no answer".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api(code: u16) -> kube::Error {
        let mut status = Status::failure("refused", "Forbidden");
        status.code = code;
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn refusals_expiry_and_the_rest() {
        let forbidden = Failure::of(&watcher::Error::InitialListFailed(api(403)));
        assert_eq!(
            (forbidden.reason, forbidden.status, forbidden.class),
            (ErrorReason::ListFailed, Some(403), Class::Refused)
        );
        assert_eq!(forbidden.status_text(), "403 Forbidden");
        let missing = Failure::of(&watcher::Error::WatchStartFailed(api(404)));
        assert_eq!(missing.class, Class::Refused);
        assert_eq!(missing.reason, ErrorReason::WatchFailed);
        let unavailable = Failure::of(&watcher::Error::InitialListFailed(api(503)));
        assert_eq!(unavailable.class, Class::Transient);
        assert!(!unavailable.same_state(&forbidden));
        let mut gone = Status::failure("too old resource version: 1 (2)", "Expired");
        gone.code = 410;
        let gone = Failure::of(&watcher::Error::WatchError(Box::new(gone)));
        assert_eq!(
            (gone.reason, gone.class),
            (ErrorReason::Expired, Class::Expired)
        );
        let no_rv = Failure::of(&watcher::Error::NoResourceVersion);
        assert_eq!((no_rv.status, no_rv.class), (None, Class::Transient));
        assert_eq!(no_rv.status_text(), "no answer");
    }
}
