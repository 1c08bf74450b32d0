//! The action vocabulary the API posts onto the VMM channel.
//!
//! The types live in `squib-config` (pure data, shared with the VMM without tokio); this module
//! re-exports them under the seed's names.

pub use squib_config::action::{
    ActionClass, Admissibility, AdmissionError, ApiAction, ApiResponse, NOT_SUPPORTED_AFTER_START,
    NOT_SUPPORTED_BEFORE_START,
};
