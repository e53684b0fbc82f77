#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod attribution;
mod client;
pub mod de;
pub mod enterprise;
mod error;
pub mod flagship;
mod guard;
pub mod json;

pub use attribution::Attribution;
pub use client::{
    Clock, ConfigError, EnterpriseCredentials, FixedClock, FlagshipCredentials, PreparedRequest,
    SystemClock, WdtClient, WdtClientBuilder, prepare_enterprise, prepare_flagship,
};
pub use error::{Family, RateLimitKind, ThrottleReason, VendorError};
pub use guard::Policy;
pub use secrecy::SecretString;
