//! pvs@2 signatures: a JWS in JSON serialisation (`_sigs/NAME.json`) whose
//! payload is detached — the canonical JSON of the state keys its protected
//! header selects (`pvs.include` / `pvs.exclude` globs, `**` crossing `/`) —
//! and whose key is embedded as a JWK that must be in the device's trust
//! store. This module implements ES256 (P-256), the algorithm pvr signs with
//! for EC keys; RS256/ES384/ES512 signatures are reported as unsupported.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde_json::{json, Map, Value};

use crate::canonical;
use crate::model::{Entry, SignatureDoc, SPEC_SIG};
use crate::state::State;

/// How strictly a device checks signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Signatures are not looked at.
    Disabled,
    /// Checked and reported, never refused.
    Audit,
    /// Every signature present must verify; unsigned parts are accepted.
    Lenient,
    /// Every signature must verify and every key of the state be covered.
    Strict,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(Mode::Disabled),
            "audit" => Ok(Mode::Audit),
            "lenient" => Ok(Mode::Lenient),
            "strict" => Ok(Mode::Strict),
            o => Err(format!(
                "signature mode \"{o}\": use disabled, audit, lenient or strict"
            )),
        }
    }
}

/// Glob match of a state key: `**` matches anything, `*` and `?` stay within
/// one path component.
pub fn glob(pattern: &str, key: &str) -> bool {
    fn go(p: &[u8], k: &[u8]) -> bool {
        match p {
            [] => k.is_empty(),
            [b'*', b'*', rest @ ..] => {
                // `**/` may also match nothing: `**/src.json` matches `src.json`.
                (0..=k.len()).any(|i| go(rest, &k[i..]))
                    || rest.strip_prefix(b"/").is_some_and(|r| go(r, k))
            }
            [b'*', rest @ ..] => (0..=k.len())
                .take_while(|&i| i == 0 || k[i - 1] != b'/')
                .any(|i| go(rest, &k[i..])),
            [b'?', rest @ ..] => !k.is_empty() && k[0] != b'/' && go(rest, &k[1..]),
            [c, rest @ ..] => k.first() == Some(c) && go(rest, &k[1..]),
        }
    }
    go(pattern.as_bytes(), key.as_bytes())
}

/// The keys a header selects, and the payload (their canonical JSON).
pub fn payload(
    state: &State,
    include: &[String],
    exclude: &[String],
) -> (BTreeSet<String>, Vec<u8>) {
    let mut selected = Map::new();
    let mut keys = BTreeSet::new();
    for (k, e) in state.entries() {
        if include.iter().any(|p| glob(p, k)) && !exclude.iter().any(|p| glob(p, k)) {
            selected.insert(k.clone(), e.to_value());
            keys.insert(k.clone());
        }
    }
    (keys, canonical::to_vec(&Value::Object(selected)))
}

/// The include/exclude `pvr sig add --part NAME` uses.
pub fn part_globs(name: &str) -> (Vec<String>, Vec<String>) {
    (
        vec![format!("{name}/**"), format!("_config/{name}/**")],
        vec![format!("{name}/src.json"), format!("_sigs/{name}.json")],
    )
}

fn jwk_of(key: &VerifyingKey) -> Value {
    let point = key.to_encoded_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(point.x().map(|x| x.as_slice()).unwrap_or(&[])),
        "y": URL_SAFE_NO_PAD.encode(point.y().map(|y| y.as_slice()).unwrap_or(&[])),
    })
}

fn key_of_jwk(jwk: &Value) -> Result<VerifyingKey, String> {
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(format!(
            "jwk {}: only EC P-256 keys are supported",
            jwk["kty"]
        ));
    }
    let coord = |c: &str| {
        URL_SAFE_NO_PAD
            .decode(jwk[c].as_str().unwrap_or(""))
            .map_err(|e| format!("jwk.{c}: {e}"))
    };
    let mut sec1 = vec![4u8];
    sec1.extend(coord("x")?);
    sec1.extend(coord("y")?);
    VerifyingKey::from_sec1_bytes(&sec1).map_err(|e| format!("jwk: {e}"))
}

/// Public keys a device trusts, from PEM (SubjectPublicKeyInfo) text.
pub fn trust_store_from_pem(pem: &str) -> Result<Vec<VerifyingKey>, String> {
    let mut keys = Vec::new();
    for block in pem.split("-----END PUBLIC KEY-----") {
        if let Some(start) = block.find("-----BEGIN PUBLIC KEY-----") {
            let text = format!("{}-----END PUBLIC KEY-----\n", &block[start..]);
            keys.push(
                VerifyingKey::from_public_key_pem(&text)
                    .map_err(|e| format!("trust store: {e}"))?,
            );
        }
    }
    Ok(keys)
}

/// Sign the keys of `state` that `include`/`exclude` select with `key`, as
/// `_sigs/NAME.json` expects (ES256, embedded JWK, `typ` PVS).
pub fn sign(
    state: &State,
    key: &SigningKey,
    include: &[String],
    exclude: &[String],
) -> SignatureDoc {
    let header = json!({
        "alg": "ES256",
        "typ": "PVS",
        "jwk": jwk_of(key.verifying_key()),
        "pvs": {"include": include, "exclude": exclude},
    });
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let (_, body) = payload(state, include, exclude);
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(body));
    let sig: Signature = key.sign(input.as_bytes());
    SignatureDoc {
        spec: SPEC_SIG.into(),
        protected,
        signature: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
        extra: Map::new(),
    }
}

/// Check one signature document against the state and the trust store;
/// returns the keys it covers.
pub fn verify(
    doc: &SignatureDoc,
    state: &State,
    trusted: &[VerifyingKey],
) -> Result<BTreeSet<String>, String> {
    let header: Value = URL_SAFE_NO_PAD
        .decode(doc.protected.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("protected header is not base64url JSON")?;
    match header["alg"].as_str() {
        Some("ES256") => {}
        Some(other) => return Err(format!("algorithm {other} is not supported by this build")),
        None => return Err("no alg".into()),
    }
    let key = key_of_jwk(&header["jwk"])?;
    if !trusted.contains(&key) {
        return Err("signed with a key the device does not trust".into());
    }
    let list = |k: &str| -> Vec<String> {
        header["pvs"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let (keys, body) = payload(state, &list("include"), &list("exclude"));
    let input = format!(
        "{}.{}",
        doc.protected.trim_end_matches('='),
        URL_SAFE_NO_PAD.encode(body)
    );
    let raw = URL_SAFE_NO_PAD
        .decode(doc.signature.trim_end_matches('='))
        .map_err(|e| format!("signature: {e}"))?;
    let sig = Signature::from_slice(&raw).map_err(|e| format!("signature: {e}"))?;
    key.verify(input.as_bytes(), &sig)
        .map_err(|_| "the signature does not match the state's content".to_string())?;
    Ok(keys)
}

/// Check every signature of `state` under `mode`: the problems that refuse
/// it (empty when it may run), and the warnings to log.
pub fn check(state: &State, mode: Mode, trusted: &[VerifyingKey]) -> (Vec<String>, Vec<String>) {
    if mode == Mode::Disabled {
        return (Vec::new(), Vec::new());
    }
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for (key, entry) in state.entries() {
        if let Entry::Signature(doc) = entry {
            match verify(doc, state, trusted) {
                Ok(keys) => covered.extend(keys),
                Err(e) => problems.push(format!("{key}: {e}")),
            }
        }
    }
    if mode == Mode::Strict {
        let uncovered: Vec<&String> = state
            .entries()
            .keys()
            .filter(|k| {
                *k != "#spec"
                    && !k.starts_with("_sigs/")
                    && !k.ends_with("/src.json")
                    && !covered.contains(*k)
            })
            .collect();
        if !uncovered.is_empty() {
            let shown: Vec<&str> = uncovered.iter().take(5).map(|s| s.as_str()).collect();
            problems.push(format!(
                "strict mode: {} key(s) no signature covers: {}{}",
                uncovered.len(),
                shown.join(", "),
                if uncovered.len() > 5 { ", …" } else { "" }
            ));
        }
    }
    if mode == Mode::Audit {
        (Vec::new(), problems)
    } else {
        (problems, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("edge-app/**", "edge-app/run.json"));
        assert!(glob("edge-app/**", "edge-app/a/b/c"));
        assert!(!glob("edge-app/**", "edge-app2/run.json"));
        assert!(glob("**/src.json", "edge-app/src.json"));
        assert!(glob("**/src.json", "src.json"));
        assert!(glob("_config/edge-app/**", "_config/edge-app/etc/x.conf"));
        assert!(glob("*", "device.json"));
        assert!(!glob("*", "bsp/run.json"));
        assert!(glob("bsp/*.json", "bsp/run.json"));
        assert!(glob("#spec", "#spec"));
    }
}
