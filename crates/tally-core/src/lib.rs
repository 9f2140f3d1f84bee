//! Tally's domain model, free of I/O and of any runtime.
//!
//! Every value that crosses a crate boundary is a validated newtype built here:
//! - [`Namespace`], [`CounterName`] and [`CounterKey`] name a counter ([`name`]);
//! - [`IdempotencyToken`] makes a mutation safe to retry ([`token`]);
//! - [`Event`] is one immutable entry of the event log ([`event`]);
//! - [`Checkpoint`] and [`Fold`] are the rollup arithmetic ([`fold`]);
//! - [`NamespaceConfig`] carries a namespace's counter type and windows ([`namespace_config`]);
//! - [`Timestamp`] and the [`Clock`] seam keep time injectable ([`time`]);
//! - [`ErrorCode`] is the one list of error codes every front door maps ([`error_code`]);
//! - [`Failure`] is a failure of a layer below, kept with its cause ([`failure`]);
//! - [`Operation`] names each operation of the API once, for every door ([`operation`]).
//!
//! Constructors validate, so code holding one of these types never re-checks it.

pub mod error_code;
pub mod event;
pub mod failure;
pub mod fold;
pub mod name;
pub mod namespace_config;
pub mod operation;
pub mod time;
pub mod token;

pub use error_code::{ErrorCode, UnknownCode};
pub use event::{Event, EventKind};
pub use failure::Failure;
pub use fold::{Checkpoint, Fold};
pub use name::{CounterKey, CounterName, NameError, Namespace};
pub use namespace_config::{ConfigError, CounterType, NamespaceConfig, NamespaceConfigPatch, WindowError};
pub use operation::{Operation, UnknownOperation};
pub use time::{Clock, ManualClock, SystemClock, TimeError, Timestamp};
pub use token::{IdempotencyToken, TokenError};
