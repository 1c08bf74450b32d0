//! `PATCH /vm` body (`Vm` in the swagger): pause or resume the microVM.

use serde::{Deserialize, Serialize};

/// Requested microVM state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmStateUpdate {
    /// Pause the vCPUs.
    Paused,
    /// Resume the vCPUs.
    Resumed,
}

/// Raw `PATCH /vm` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVm {
    /// Requested state.
    pub state: VmStateUpdate,
}

impl TryFrom<RawVm> for VmStateUpdate {
    type Error = String;

    fn try_from(raw: RawVm) -> Result<Self, Self::Error> {
        Ok(raw.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VmStateUpdate, String> {
        let raw: RawVm = serde_json::from_str(json).map_err(|e| e.to_string())?;
        VmStateUpdate::try_from(raw)
    }

    #[test]
    fn test_should_parse_states() {
        assert_eq!(
            parse(r#"{"state":"Paused"}"#).unwrap(),
            VmStateUpdate::Paused
        );
        assert_eq!(
            parse(r#"{"state":"Resumed"}"#).unwrap(),
            VmStateUpdate::Resumed
        );
    }

    #[test]
    fn test_should_reject_bad_states() {
        assert_eq!(
            parse(r#"{"state":"Running"}"#).unwrap_err(),
            "unknown variant `Running`, expected `Paused` or `Resumed` at line 1 column 18"
        );
        assert!(
            parse("{}")
                .unwrap_err()
                .starts_with("missing field `state`")
        );
    }
}
