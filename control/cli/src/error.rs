//! What can go wrong in a command, and how it reads on stderr: one line a person can act
//! on, never a secret, plus an exit code a script can branch on.

use std::process::ExitCode;

/// Exit code of any failure other than the ones below.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when the service says the thing asked for does not exist (HTTP 404).
pub const EXIT_NOT_FOUND: u8 = 3;

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The service answered with an error.
    #[error("{}", api_message(.subject, *.status, .kind, .message))]
    Api {
        /// What the request was about, e.g. `function 'foo'`: a 404 names it.
        subject: String,
        status: u16,
        /// Lambda's error type from `x-amzn-ErrorType`, e.g. `ResourceNotFoundException`.
        kind: String,
        message: String,
    },
    /// The endpoint could not be reached (refused, DNS, timeout, TLS other than trust).
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The service's certificate does not chain to the configured CA (or none is set).
    #[error("the service's certificate is not trusted; pass --ca DIR/ca.pem (the control data directory's CA) or run `ember configure --ca`")]
    Untrusted,
    /// The service's certificate is trusted but names another host.
    #[error("the service's certificate is not valid for {host}; use the host name or address it was issued for")]
    WrongHost { host: String },
    /// Configuration missing or unusable, or a bad argument the parser cannot catch.
    #[error("{0}")]
    Config(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// A local operator command (`ember keys`) failed.
    #[error(transparent)]
    Admin(#[from] ember_control::admin::AdminError),
    /// The service sent something this client cannot read.
    #[error("unexpected response from the service: {0}")]
    Protocol(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Api { status: 404, .. } => ExitCode::from(EXIT_NOT_FOUND),
            _ => ExitCode::from(EXIT_FAILURE),
        }
    }

    /// A local file error, naming the file.
    pub fn file(path: &std::path::Path, source: std::io::Error) -> CliError {
        CliError::File {
            path: path.display().to_string(),
            source,
        }
    }
}

/// A 404 names what was asked for; anything else shows the service's own message.
fn api_message(subject: &str, status: u16, kind: &str, message: &str) -> String {
    if status == 404 {
        format!("{subject} not found ({kind})")
    } else if message.is_empty() {
        format!("the service refused the request: HTTP {status} ({kind})")
    } else {
        format!("{message} ({kind})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, kind: &str, message: &str) -> CliError {
        CliError::Api {
            subject: "function 'foo'".into(),
            status,
            kind: kind.into(),
            message: message.into(),
        }
    }

    #[test]
    fn not_found_names_the_subject_and_has_its_own_exit_code() {
        let err = api(
            404,
            "ResourceNotFoundException",
            "Function not found: arn:…",
        );
        assert_eq!(
            err.to_string(),
            "function 'foo' not found (ResourceNotFoundException)"
        );
        assert_eq!(err.exit_code(), ExitCode::from(EXIT_NOT_FOUND));
    }

    #[test]
    fn other_errors_show_the_service_message() {
        let err = api(
            409,
            "ResourceConflictException",
            "Function already exist: foo",
        );
        assert_eq!(
            err.to_string(),
            "Function already exist: foo (ResourceConflictException)"
        );
        assert_eq!(err.exit_code(), ExitCode::from(EXIT_FAILURE));
        assert_eq!(
            api(500, "ServiceException", "").to_string(),
            "the service refused the request: HTTP 500 (ServiceException)"
        );
    }
}
