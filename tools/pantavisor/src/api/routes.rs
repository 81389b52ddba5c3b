//! Requests to typed calls: paths, methods and bodies checked here, so the
//! daemon only sees well-formed [`Call`]s.

use pvctrl::proto::{self, Action, Op};
use serde_json::Value;

use pvstate::layout;

use super::http::Request;
use super::Call;
use crate::error::Refusal;

fn json_body(body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::Invalid(format!("body is not JSON: {e}")))
}

fn not_allowed(method: &str, path: &str) -> Refusal {
    Refusal::NotAllowed(format!("{method} not allowed on {path}"))
}

fn user_meta_key(key: &str) -> Result<String, Refusal> {
    if key.is_empty() || key.contains('/') || key.starts_with('.') || key.len() > 255 {
        return Err(Refusal::Invalid(format!("\"{key}\" is not a metadata key")));
    }
    Ok(key.to_string())
}

fn command(body: &[u8]) -> Result<Call, Refusal> {
    let v = json_body(body)?;
    let payload = v
        .get("payload")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let op = match v.get("op").and_then(Value::as_str) {
        Some(op) => serde_json::from_value::<Op>(Value::String(op.into()))
            .map_err(|_| Refusal::Invalid(format!("unsupported command {op}")))?,
        None => return Err(Refusal::Invalid("missing \"op\"".into())),
    };
    if matches!(op, Op::LOCAL_RUN | Op::LOCAL_RUN_COMMIT | Op::TRY_ONCE) {
        revision(&payload)?;
    }
    Ok(Call::Command(proto::Command { op, payload }))
}

fn container_action(name: &str, body: &[u8]) -> Result<Call, Refusal> {
    let usage = || {
        Refusal::Invalid(
            "body must be {\"action\": \"stop\" | \"start\" | \"restart\" | \"kill\"}".into(),
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|_| usage())?;
    let action: Action = v
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(usage)?
        .parse()
        .map_err(|_| usage())?;
    let signal = match v.get("signal") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            s.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| Refusal::Invalid(format!("signal {s}: not a signal")))?,
        ),
    };
    Ok(Call::ContainerAction {
        name: name.to_string(),
        action: proto::ContainerAction { action, signal },
    })
}

fn revision(rev: &str) -> Result<String, Refusal> {
    layout::revision_name(rev)
        .map(str::to_string)
        .map_err(Refusal::Invalid)
}

fn steps(method: &str, rest: &str, body: &[u8]) -> Result<Call, Refusal> {
    if let Some(rev) = rest.strip_suffix("/progress") {
        let rev = revision(rev)?;
        return match method {
            "GET" => Ok(Call::Progress(rev)),
            _ => Err(not_allowed(method, &format!("/steps/{rest}"))),
        };
    }
    if let Some(rev) = rest.strip_suffix("/commitmsg") {
        let rev = revision(rev)?;
        return match method {
            "PUT" => Ok(Call::CommitMessage(rev, body.to_vec())),
            _ => Err(Refusal::NotAllowed("PUT a commit message".into())),
        };
    }
    match method {
        "PUT" => match rest.strip_prefix("locals/") {
            Some(name) => Ok(Call::InstallLocal(name.into(), body.to_vec())),
            None => Err(Refusal::Invalid(
                "only locals/NAME revisions can be installed here".into(),
            )),
        },
        "GET" => Ok(Call::Step(revision(rest)?)),
        _ => Err(not_allowed(method, &format!("/steps/{rest}"))),
    }
}

/// The most a logs request returns at once.
pub const LOGS_MAX: u64 = 1 << 20;

/// `GET /logs/NAME?offset=N&max=M`.
fn logs(name: &str, full: &str) -> Result<Call, Refusal> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(Refusal::Invalid(format!(
            "\"{name}\" is not a container name"
        )));
    }
    let (mut offset, mut max) = (None, 64 * 1024);
    let query = full.split_once('?').map(|(_, q)| q).unwrap_or("");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = v
            .parse::<u64>()
            .map_err(|_| Refusal::Invalid(format!("{k}={v}: not a number")))?;
        match k {
            "offset" => offset = Some(n),
            "max" => max = n.clamp(1, LOGS_MAX),
            _ => {
                return Err(Refusal::Invalid(format!(
                    "unknown parameter {k} (offset, max)"
                )))
            }
        }
    }
    Ok(Call::Logs {
        name: name.into(),
        offset,
        max,
    })
}

/// The call a request makes.
pub fn route(req: &Request) -> Result<Call, Refusal> {
    let path = req
        .path
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_end_matches('/');
    let method = req.method.as_str();
    let body = &req.body[..];
    match (method, path) {
        ("POST", "/signal") => {
            let v = json_body(body)?;
            match v.get("type").and_then(Value::as_str) {
                Some(kind) => Ok(Call::Signal(proto::Signal { kind: kind.into() })),
                None => Err(Refusal::Invalid("missing \"type\"".into())),
            }
        }
        ("GET", "/containers") => Ok(Call::Containers),
        ("PUT", p) if p.starts_with("/containers/") => {
            container_action(&p["/containers/".len()..], body)
        }
        ("GET", "/groups") => Ok(Call::Groups),
        ("GET", "/xconnect-graph") => Ok(Call::XconnectGraph),
        ("GET", "/buildinfo") => Ok(Call::BuildInfo),
        ("GET", "/config") => Ok(Call::Config),
        ("GET", "/device-meta") => Ok(Call::DeviceMeta),
        ("GET", "/user-meta") => Ok(Call::UserMeta),
        (m, p) if p.starts_with("/user-meta/") => {
            let key = user_meta_key(&p["/user-meta/".len()..])?;
            match m {
                "GET" => Ok(Call::UserMetaGet(key)),
                "PUT" => {
                    let value = std::str::from_utf8(body)
                        .map_err(|_| Refusal::Invalid("value is not UTF-8".into()))?;
                    Ok(Call::UserMetaPut(key, value.into()))
                }
                "DELETE" => Ok(Call::UserMetaDelete(key)),
                _ => Err(not_allowed(m, p)),
            }
        }
        ("GET", "/objects") => Ok(Call::Objects),
        ("GET", p) if p.starts_with("/objects/") => {
            let sha = &p["/objects/".len()..];
            let (sha, partial) = match sha.strip_suffix("/partial") {
                Some(s) => (s, true),
                None => (sha, false),
            };
            sha.parse()
                .map(if partial {
                    Call::ObjectPartial
                } else {
                    Call::Object
                })
                .map_err(|_| Refusal::Invalid(format!("\"{sha}\" is not an object id")))
        }
        ("GET", "/steps") => Ok(Call::Steps),
        (m, p) if p.starts_with("/steps/") => steps(m, &p["/steps/".len()..], body),
        ("POST", "/commands") => command(body),
        ("POST", "/storage/gc") => Ok(Call::Gc),
        ("GET", p) if p.starts_with("/logs/") => logs(&p["/logs/".len()..], &req.path),
        (
            _,
            "/containers" | "/groups" | "/buildinfo" | "/config" | "/device-meta" | "/user-meta"
            | "/signal" | "/commands" | "/objects" | "/steps",
        ) => Err(not_allowed(method, path)),
        _ => Err(Refusal::NotFound(format!("no endpoint {path}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, body: &str) -> Result<Call, Refusal> {
        route(&Request {
            method: method.into(),
            path: path.into(),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn requests_become_calls() {
        assert_eq!(req("GET", "/containers/", ""), Ok(Call::Containers));
        assert_eq!(
            req(
                "POST",
                "/commands",
                r#"{"op":"TRY_ONCE","payload":"locals/a"}"#
            ),
            Ok(Call::Command(proto::Command {
                op: Op::TRY_ONCE,
                payload: "locals/a".into()
            }))
        );
        assert_eq!(
            req("PUT", "/containers/app", r#"{"action":"kill","signal":15}"#),
            Ok(Call::ContainerAction {
                name: "app".into(),
                action: proto::ContainerAction {
                    action: Action::Kill,
                    signal: Some(15)
                }
            })
        );
        assert_eq!(
            req("PUT", "/steps/locals/x", "{}"),
            Ok(Call::InstallLocal("x".into(), b"{}".to_vec()))
        );
        assert_eq!(
            req("GET", "/steps/locals/x/progress", ""),
            Ok(Call::Progress("locals/x".into()))
        );
        assert_eq!(
            req("PUT", "/user-meta/k", "v"),
            Ok(Call::UserMetaPut("k".into(), "v".into()))
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let refused = |m, p, b| req(m, p, b).unwrap_err();
        assert_eq!(
            refused("POST", "/commands", r#"{"op":"FORMAT_DISK"}"#),
            Refusal::Invalid("unsupported command FORMAT_DISK".into())
        );
        assert_eq!(
            refused("POST", "/commands", "{}"),
            Refusal::Invalid("missing \"op\"".into())
        );
        assert!(
            matches!(refused("POST", "/commands", "nope"), Refusal::Invalid(m) if m.starts_with("body is not JSON"))
        );
        assert!(
            matches!(refused("PUT", "/containers/a", r#"{"action":"explode"}"#), Refusal::Invalid(m) if m.contains("\"restart\""))
        );
        assert!(matches!(
            refused("PUT", "/steps/7", "{}"),
            Refusal::Invalid(_)
        ));
        // A revision name never leaves trails/: `..`, paths and empty names
        // are refused before the daemon sees them.
        for path in [
            "/steps/..",
            "/steps/../../config",
            "/steps/locals/../0",
            "/steps/locals/..",
            "/steps/0/../1",
            "/steps/-1",
        ] {
            assert!(
                matches!(refused("GET", path, ""), Refusal::Invalid(_)),
                "{path}"
            );
        }
        for path in ["/steps/../../etc/progress", "/steps/locals/../x/progress"] {
            assert!(
                matches!(refused("GET", path, ""), Refusal::Invalid(_)),
                "{path}"
            );
        }
        assert!(matches!(
            refused(
                "POST",
                "/commands",
                r#"{"op":"LOCAL_RUN","payload":"../../tmp/x"}"#
            ),
            Refusal::Invalid(_)
        ));
        assert!(matches!(
            refused("PUT", "/steps/../x/commitmsg", "m"),
            Refusal::Invalid(_)
        ));
        assert_eq!(req("GET", "/steps/12", ""), Ok(Call::Step("12".into())));
        assert_eq!(
            req("GET", "/logs/app?offset=10&max=99999999", ""),
            Ok(Call::Logs {
                name: "app".into(),
                offset: Some(10),
                max: LOGS_MAX
            })
        );
        assert!(matches!(
            req("GET", "/logs/..", ""),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            req("GET", "/logs/a?tail=1", ""),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            refused("GET", "/user-meta/.hidden", ""),
            Refusal::Invalid(_)
        ));
        assert!(matches!(
            refused("GET", "/objects/xyz", ""),
            Refusal::Invalid(_)
        ));
        assert_eq!(
            refused("DELETE", "/containers", ""),
            Refusal::NotAllowed("DELETE not allowed on /containers".into())
        );
        assert_eq!(
            refused("GET", "/nowhere", ""),
            Refusal::NotFound("no endpoint /nowhere".into())
        );
    }
}
