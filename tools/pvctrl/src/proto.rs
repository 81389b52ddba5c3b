//! What travels over pv-ctrl: the endpoints' paths and JSON shapes
//! (Pantavisor's, extended where noted).

use serde::{Deserialize, Serialize};

/// Where a container's processes find the socket.
pub const CONTAINER_SOCKET: &str = "/pantavisor/pv-ctrl";

/// `PUT /containers/NAME` `{"action": …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Stop,
    Start,
    Restart,
    /// A signal to the container's init (ours; `signal`, 9 by default).
    Kill,
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("\"{s}\": use stop, start, restart or kill"))
    }
}

/// The body of `PUT /containers/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerAction {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// `POST /commands` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum Op {
    LOCAL_RUN,
    LOCAL_RUN_COMMIT,
    TRY_ONCE,
    REBOOT_DEVICE,
    RUN_GC,
    /// Hang the daemon's event loop (only with `debug.hang_command=1`): a
    /// watchdog test.
    DEBUG_HANG,
}

/// The body of `POST /commands`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub op: Op,
    #[serde(default)]
    pub payload: String,
}

/// The body of `POST /signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    #[serde(rename = "type")]
    pub kind: String,
}

/// The error body every failed request carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Error")]
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_pantavisors() {
        let c = Command {
            op: Op::LOCAL_RUN,
            payload: "locals/x".into(),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"op":"LOCAL_RUN","payload":"locals/x"}"#
        );
        let a: ContainerAction = serde_json::from_str(r#"{"action":"kill","signal":15}"#).unwrap();
        assert_eq!((a.action, a.signal), (Action::Kill, Some(15)));
        assert!("reboot".parse::<Action>().is_err());
        assert_eq!(
            serde_json::to_string(&Signal {
                kind: "ready".into()
            })
            .unwrap(),
            r#"{"type":"ready"}"#
        );
    }
}
