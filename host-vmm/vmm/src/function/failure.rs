//! Why an invocation did not produce a normal response, and why an environment failed.

use std::sync::Arc;
use std::time::Duration;

use ember_wire::function::{DecodeError, PAYLOAD_MAX};

use super::spec::SpecError;
use crate::client::ClientError;
use crate::vm::{VmError, VmExit};

/// Why an invocation did not produce a normal response. The messages of the function's own
/// failures come from the guest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("invalid configuration: {0}")]
    InvalidConfig(#[source] SpecError),
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("payload of {0} bytes exceeds the {PAYLOAD_MAX}-byte limit")]
    PayloadTooLarge(usize),
    /// The init phase failed.
    #[error("init error: {0}")]
    Init(String),
    /// Non-zero exit or trap.
    #[error("function error: {0}")]
    Function(String),
    #[error("{0}")]
    OutOfMemory(String),
    /// The host stopped the invocation at the function's timeout.
    #[error("Task timed out after {:.2} seconds", .0.as_secs_f64())]
    Timeout(Duration),
    /// No room for a new environment on this worker: nothing ran.
    #[error("this worker is at capacity: {0}")]
    AtCapacity(String),
    /// The environment died (guest fault, broken protocol) or could not be created.
    #[error("environment failed: {0}")]
    Crashed(#[source] Arc<EnvError>),
}

impl From<EnvError> for Failure {
    fn from(e: EnvError) -> Failure {
        Failure::Crashed(Arc::new(e))
    }
}

/// A [`Failure`] as it crosses from a VM process: the kind, and the words.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum FailureState {
    InvalidModule(String),
    Init(String),
    Function(String),
    OutOfMemory(String),
    Timeout(Duration),
    /// Every other failure (the environment's, or the VM process's own).
    Crashed(String),
}

impl From<&Failure> for FailureState {
    fn from(failure: &Failure) -> FailureState {
        match failure {
            Failure::InvalidModule(m) => FailureState::InvalidModule(m.clone()),
            Failure::Init(m) => FailureState::Init(m.clone()),
            Failure::Function(m) => FailureState::Function(m.clone()),
            Failure::OutOfMemory(m) => FailureState::OutOfMemory(m.clone()),
            Failure::Timeout(t) => FailureState::Timeout(*t),
            Failure::Crashed(e) => FailureState::Crashed(e.to_string()),
            other => FailureState::Crashed(other.to_string()),
        }
    }
}

impl From<FailureState> for Failure {
    fn from(state: FailureState) -> Failure {
        match state {
            FailureState::InvalidModule(m) => Failure::InvalidModule(m),
            FailureState::Init(m) => Failure::Init(m),
            FailureState::Function(m) => Failure::Function(m),
            FailureState::OutOfMemory(m) => Failure::OutOfMemory(m),
            FailureState::Timeout(t) => Failure::Timeout(t),
            FailureState::Crashed(m) => EnvError::Remote(m).into(),
        }
    }
}

/// Why an environment could not be created, kept or used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("random seed: {0}")]
    Seed(#[source] getrandom::Error),
    #[error("preparing a guest template: {0}")]
    Template(#[source] VmError),
    #[error("warming a spare VM: {0}")]
    WarmSpare(#[source] VmError),
    #[error("{0}")]
    Restore(#[source] VmError),
    #[error("starting from a spare VM: {0}")]
    Spare(#[source] VmError),
    #[error("snapshotting after init: {0}")]
    Snapshot(#[source] VmError),
    #[error("resetting: {0}")]
    Reset(#[source] VmError),
    #[error("resetting: {0}")]
    Reconnect(#[source] ClientError),
    #[error("{0}")]
    Connect(#[source] ClientError),
    #[error("no connection to the guest")]
    NotConnected,
    #[error("guest sent a bad reply: {0}")]
    BadReply(#[source] DecodeError),
    #[error("unexpected frame kind {0}")]
    UnexpectedFrame(u8),
    /// The conversation broke because the VM ended.
    #[error("{0}")]
    VmEnded(#[source] VmExit),
    /// The conversation broke with the VM still running.
    #[error("{0}")]
    Lost(#[source] ClientError),
    /// What a VM process reported, or how it ended.
    #[error("{0}")]
    Remote(String),
}

/// Two environment errors are equal when they say the same.
impl PartialEq for EnvError {
    fn eq(&self, other: &EnvError) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for EnvError {}
