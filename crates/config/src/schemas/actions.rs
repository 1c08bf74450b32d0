//! `PUT /actions` body (`InstanceActionInfo` in the swagger).
//!
//! An unknown `action_type` fails deserialization with serde's text, as in Firecracker:
//! ``unknown variant `Bogus`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel` ``.

use serde::{Deserialize, Serialize};

/// An instance action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceAction {
    /// Write one metrics line now (post-boot only).
    FlushMetrics,
    /// Build and boot the microVM (pre-boot only).
    InstanceStart,
    /// Inject Ctrl+Alt+Del through the i8042 (post-boot, x86 only).
    SendCtrlAltDel,
}

/// Raw `PUT /actions` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstanceActionInfo {
    /// The action.
    pub action_type: InstanceAction,
}

impl TryFrom<RawInstanceActionInfo> for InstanceAction {
    type Error = String;

    fn try_from(raw: RawInstanceActionInfo) -> Result<Self, Self::Error> {
        Ok(raw.action_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<InstanceAction, String> {
        let raw: RawInstanceActionInfo = serde_json::from_str(json).map_err(|e| e.to_string())?;
        InstanceAction::try_from(raw)
    }

    #[test]
    fn test_should_parse_every_action() {
        assert_eq!(
            parse(r#"{"action_type":"InstanceStart"}"#).unwrap(),
            InstanceAction::InstanceStart
        );
        assert_eq!(
            parse(r#"{"action_type":"FlushMetrics"}"#).unwrap(),
            InstanceAction::FlushMetrics
        );
        assert_eq!(
            parse(r#"{"action_type":"SendCtrlAltDel"}"#).unwrap(),
            InstanceAction::SendCtrlAltDel
        );
    }

    #[test]
    fn test_should_reject_like_firecracker() {
        assert_eq!(
            parse(r#"{"action_type":"Bogus"}"#).unwrap_err(),
            "unknown variant `Bogus`, expected one of `FlushMetrics`, `InstanceStart`, `SendCtrlAltDel` at line 1 column 22"
        );
        assert_eq!(
            parse(r#"{"action_type":"InstanceStart","extra":1}"#).unwrap_err(),
            "unknown field `extra`, expected `action_type` at line 1 column 38"
        );
    }
}
