//! pvs@2 signatures: a JWS in JSON serialisation (`_sigs/NAME.json`) whose
//! payload is detached — the canonical JSON of the state keys its protected
//! header selects (`pvs.include` / `pvs.exclude` globs, `**` crossing `/`) —
//! and whose key is embedded as a JWK that must be in the device's trust
//! store, or given as an `x5c` certificate chain to a trusted CA (the signing
//! certificate for code signing). Verification and signing cover RS256 (RSA
//! keys, pvr's choice for them), ES256, ES384 and ES512, with an embedded JWK
//! or an x5c chain. Certificate validity dates
//! are not checked: devices may boot without a clock.

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{json, Map, Value};
use x509_cert::der::{Decode, DecodePem, Encode};
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::Certificate;

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

pub use crate::glob::state_key as glob;

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

/// A public key a device may trust, or a CA whose certificate chains (`x5c`)
/// it accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum TrustedKey {
    P256(VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    /// P-521 (ES512); held as the public key, which compares and prints.
    P521(p521::PublicKey),
    Rsa(RsaPublicKey),
    Ca(Box<Certificate>),
}

const CODE_SIGNING: &str = "1.3.6.1.5.5.7.3.3";

/// The key of a SubjectPublicKeyInfo (DER).
fn key_of_spki(der: &[u8]) -> Result<TrustedKey, String> {
    VerifyingKey::from_public_key_der(der)
        .map(TrustedKey::P256)
        .or_else(|_| p384::ecdsa::VerifyingKey::from_public_key_der(der).map(TrustedKey::P384))
        .or_else(|_| p521::PublicKey::from_public_key_der(der).map(TrustedKey::P521))
        .or_else(|_| RsaPublicKey::from_public_key_der(der).map(TrustedKey::Rsa))
        .map_err(|_| "certificate key is not EC P-256/P-384/P-521 or RSA".to_string())
}

fn cert_key(cert: &Certificate) -> Result<TrustedKey, String> {
    let der = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("certificate key: {e}"))?;
    key_of_spki(&der)
}

/// Whether `cert` carries a signature `issuer`'s key made.
fn signed_by(cert: &Certificate, issuer: &TrustedKey) -> Result<(), String> {
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("certificate: {e}"))?;
    let sig = cert.signature.raw_bytes();
    let bad = || "x5c: a certificate's signature does not verify".to_string();
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::Digest;
    // ECDSA with SHA-256, SHA-384 or SHA-512, whatever the curve (OpenSSL
    // signs with SHA-256 by default even with a P-384 CA key).
    let prehash = match cert.signature_algorithm.oid.to_string().as_str() {
        "1.2.840.10045.4.3.2" => Some(sha2::Sha256::digest(&tbs).to_vec()),
        "1.2.840.10045.4.3.3" => Some(sha2::Sha384::digest(&tbs).to_vec()),
        "1.2.840.10045.4.3.4" => Some(sha2::Sha512::digest(&tbs).to_vec()),
        _ => None,
    };
    match (prehash, issuer) {
        (Some(h), TrustedKey::P256(k)) => k
            .verify_prehash(&h, &Signature::from_der(sig).map_err(|_| bad())?)
            .map_err(|_| bad()),
        (Some(h), TrustedKey::P384(k)) => k
            .verify_prehash(
                &h,
                &p384::ecdsa::Signature::from_der(sig).map_err(|_| bad())?,
            )
            .map_err(|_| bad()),
        (Some(h), TrustedKey::P521(k)) => p521_verifier(k)?
            .verify_prehash(
                &h,
                &p521::ecdsa::Signature::from_der(sig).map_err(|_| bad())?,
            )
            .map_err(|_| bad()),
        (None, TrustedKey::Rsa(k))
            if cert.signature_algorithm.oid.to_string() == "1.2.840.113549.1.1.11" =>
        {
            let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
            vk.verify(
                &tbs,
                &rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| bad())?,
            )
            .map_err(|_| bad())
        }
        _ => Err(format!(
            "x5c: certificate signature algorithm {} is not supported with this key",
            cert.signature_algorithm.oid
        )),
    }
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(
        cert.tbs_certificate
            .get::<x509_cert::ext::pkix::BasicConstraints>(),
        Ok(Some((_, bc))) if bc.ca
    )
}

/// Whether `cert` is one of the trusted CAs or is signed by one.
fn anchored(cert: &Certificate, trusted: &[TrustedKey]) -> bool {
    trusted.iter().any(|t| match t {
        TrustedKey::Ca(ca) => {
            **ca == *cert
                || (ca.tbs_certificate.subject == cert.tbs_certificate.issuer
                    && cert_key(ca).and_then(|k| signed_by(cert, &k)).is_ok())
        }
        _ => false,
    })
}

/// What a device trusts: the built-in store (public keys and CA
/// certificates, from the initramfs) and the OEM's CA certificates, each of
/// which must chain to a built-in CA. A signature that only an OEM CA
/// anchors may not cover the BSP (`bsp/…`), as in Pantavisor.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    root: Vec<TrustedKey>,
    oem: Vec<TrustedKey>,
}

impl TrustStore {
    pub fn new(root: Vec<TrustedKey>) -> Self {
        TrustStore {
            root,
            oem: Vec::new(),
        }
    }

    /// Add the OEM store's entries; those that are not CA certificates
    /// chaining to a built-in CA are left out, each with the reason.
    pub fn with_oem(mut self, oem: Vec<TrustedKey>) -> (Self, Vec<String>) {
        let mut refused = Vec::new();
        for k in oem {
            match &k {
                TrustedKey::Ca(cert) if !is_ca(cert) => refused.push(format!(
                    "OEM certificate \"{}\" is not a CA certificate (basicConstraints CA:TRUE)",
                    cert.tbs_certificate.subject
                )),
                TrustedKey::Ca(cert) if anchored(cert, &self.root) => self.oem.push(k),
                TrustedKey::Ca(cert) => refused.push(format!(
                    "OEM certificate \"{}\" does not chain to a built-in CA",
                    cert.tbs_certificate.subject
                )),
                _ => refused.push(
                    "OEM trust store: a bare public key cannot chain to a built-in CA".into(),
                ),
            }
        }
        (self, refused)
    }

    /// How many keys and certificates: (built-in, OEM).
    pub fn len(&self) -> (usize, usize) {
        (self.root.len(), self.oem.len())
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty() && self.oem.is_empty()
    }

    /// Verify `doc` against the built-in store, else the OEM CAs (and then
    /// it may not cover `bsp/` keys); the keys it covers.
    pub fn verify(&self, doc: &SignatureDoc, state: &State) -> Result<BTreeSet<String>, String> {
        let err = match verify(doc, state, &self.root) {
            Ok(keys) => return Ok(keys),
            Err(e) => e,
        };
        if self.oem.is_empty() {
            return Err(err);
        }
        let keys = verify(doc, state, &self.oem).map_err(|_| err)?;
        match keys.iter().find(|k| k.starts_with("bsp/")) {
            Some(k) => Err(format!(
                "signed under the OEM trust store, which may not cover the BSP ({k})"
            )),
            None => Ok(keys),
        }
    }
}

/// The signing key of an `x5c` chain that leads to a trusted CA; the first
/// certificate must be for code signing.
fn chain_key(x5c: &[Value], trusted: &[TrustedKey]) -> Result<TrustedKey, String> {
    use base64::engine::general_purpose::STANDARD;
    let certs: Vec<Certificate> = x5c
        .iter()
        .map(|v| {
            let der = STANDARD
                .decode(v.as_str().unwrap_or(""))
                .map_err(|e| format!("x5c: {e}"))?;
            Certificate::from_der(&der).map_err(|e| format!("x5c: {e}"))
        })
        .collect::<Result<_, String>>()?;
    let leaf = certs.first().ok_or("x5c: empty chain")?;
    let eku = leaf
        .tbs_certificate
        .get::<ExtendedKeyUsage>()
        .map_err(|e| format!("x5c: extended key usage: {e}"))?;
    if !eku.is_some_and(|(_, u)| u.0.iter().any(|oid| oid.to_string() == CODE_SIGNING)) {
        return Err("x5c: the signing certificate is not for code signing".into());
    }
    for pair in certs.windows(2) {
        if pair[0].tbs_certificate.issuer != pair[1].tbs_certificate.subject {
            return Err("x5c: the chain is out of order".into());
        }
        signed_by(&pair[0], &cert_key(&pair[1])?)?;
    }
    let last = certs.last().ok_or("x5c: empty chain")?;
    if !anchored(last, trusted) {
        return Err("x5c: the chain does not lead to a CA the device trusts".into());
    }
    cert_key(leaf)
}

fn p521_verifier(k: &p521::PublicKey) -> Result<p521::ecdsa::VerifyingKey, String> {
    p521::ecdsa::VerifyingKey::from_affine(*k.as_affine()).map_err(|e| format!("P-521 key: {e}"))
}

impl TrustedKey {
    fn verify(&self, alg: &str, input: &[u8], sig: &[u8]) -> Result<(), String> {
        let mismatch = |_| "the signature does not match the state's content".to_string();
        let malformed = |e: p256::ecdsa::Error| format!("signature: {e}");
        match (self, alg) {
            (TrustedKey::P256(k), "ES256") => k
                .verify(input, &Signature::from_slice(sig).map_err(malformed)?)
                .map_err(mismatch),
            (TrustedKey::P384(k), "ES384") => {
                let s = p384::ecdsa::Signature::from_slice(sig).map_err(malformed)?;
                k.verify(input, &s).map_err(mismatch)
            }
            (TrustedKey::P521(k), "ES512") => {
                let s = p521::ecdsa::Signature::from_slice(sig).map_err(malformed)?;
                p521_verifier(k)?.verify(input, &s).map_err(mismatch)
            }
            (TrustedKey::Rsa(k), "RS256") => {
                let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(k.clone());
                let s = rsa::pkcs1v15::Signature::try_from(sig).map_err(malformed)?;
                vk.verify(input, &s).map_err(mismatch)
            }
            (_, alg) => Err(format!("algorithm {alg} does not fit the embedded key")),
        }
    }
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

fn b64_field(jwk: &Value, c: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(jwk[c].as_str().unwrap_or(""))
        .map_err(|e| format!("jwk.{c}: {e}"))
}

fn key_of_jwk(jwk: &Value) -> Result<TrustedKey, String> {
    match (jwk["kty"].as_str(), jwk["crv"].as_str()) {
        (Some("EC"), Some(crv @ ("P-256" | "P-384" | "P-521"))) => {
            let mut sec1 = vec![4u8];
            sec1.extend(b64_field(jwk, "x")?);
            sec1.extend(b64_field(jwk, "y")?);
            match crv {
                "P-256" => VerifyingKey::from_sec1_bytes(&sec1)
                    .map(TrustedKey::P256)
                    .map_err(|e| format!("jwk: {e}")),
                "P-384" => p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map(TrustedKey::P384)
                    .map_err(|e| format!("jwk: {e}")),
                _ => p521::PublicKey::from_sec1_bytes(&sec1)
                    .map(TrustedKey::P521)
                    .map_err(|e| format!("jwk: {e}")),
            }
        }
        (Some("RSA"), _) => {
            let n = BigUint::from_bytes_be(&b64_field(jwk, "n")?);
            let e = BigUint::from_bytes_be(&b64_field(jwk, "e")?);
            RsaPublicKey::new(n, e)
                .map(TrustedKey::Rsa)
                .map_err(|e| format!("jwk: {e}"))
        }
        (kty, crv) => Err(format!(
            "jwk: key type {kty:?} {crv:?} is not supported (EC P-256/P-384/P-521, RSA)"
        )),
    }
}

/// Public keys (PEM SubjectPublicKeyInfo) and CA certificates (PEM) a device
/// trusts.
pub fn trust_store_from_pem(pem: &str) -> Result<Vec<TrustedKey>, String> {
    let mut keys = Vec::new();
    for block in pem.split("-----END CERTIFICATE-----") {
        if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
            let text = format!("{}-----END CERTIFICATE-----\n", &block[start..]);
            let cert = Certificate::from_pem(text.as_bytes())
                .map_err(|e| format!("trust store: certificate: {e}"))?;
            keys.push(TrustedKey::Ca(Box::new(cert)));
        }
    }
    for block in pem.split("-----END PUBLIC KEY-----") {
        if let Some(start) = block.find("-----BEGIN PUBLIC KEY-----") {
            let text = format!("{}-----END PUBLIC KEY-----\n", &block[start..]);
            let key = VerifyingKey::from_public_key_pem(&text)
                .map(TrustedKey::P256)
                .or_else(|_| {
                    p384::ecdsa::VerifyingKey::from_public_key_pem(&text).map(TrustedKey::P384)
                })
                .or_else(|_| p521::PublicKey::from_public_key_pem(&text).map(TrustedKey::P521))
                .or_else(|_| RsaPublicKey::from_public_key_pem(&text).map(TrustedKey::Rsa))
                .map_err(|e| {
                    format!("trust store: not an EC P-256/P-384/P-521 or RSA public key: {e}")
                })?;
            keys.push(key);
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
    let signer = PrivateKey::P256(key.clone());
    sign_with(state, &signer, &[], include, exclude).unwrap_or_else(|_| unreachable!())
}

/// A private key to sign with: EC P-256 (ES256), EC P-384 (ES384), EC P-521
/// (ES512) or RSA (RS256).
///
/// ES256, ES384 and RS256 signatures are deterministic (RFC 6979 nonces,
/// PKCS#1 v1.5), so signing the same state twice gives the same bytes; ES512
/// signatures take a random nonce (the P-521 implementation has no RFC 6979
/// yet) and differ from run to run while verifying the same.
#[derive(Clone)]
pub enum PrivateKey {
    P256(SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl PrivateKey {
    /// A PEM private key: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
    /// PKCS#1 (`RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        if let Ok(k) = SigningKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::P384(k));
        }
        if let Ok(k) = p521::SecretKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::P521(p521_signer(&k)?));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            return Ok(PrivateKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(pem) {
            return Ok(PrivateKey::P384(k.into()));
        }
        if let Ok(k) = p521::SecretKey::from_sec1_pem(pem) {
            return Ok(PrivateKey::P521(p521_signer(&k)?));
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_pem(pem) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        Err("not an EC P-256/P-384/P-521 or RSA private key in PEM (PKCS#8, SEC1 or PKCS#1)".into())
    }

    pub fn alg(&self) -> &'static str {
        match self {
            PrivateKey::P256(_) => "ES256",
            PrivateKey::P384(_) => "ES384",
            PrivateKey::P521(_) => "ES512",
            PrivateKey::Rsa(_) => "RS256",
        }
    }

    /// The public half, as a device's trust store holds it.
    pub fn public(&self) -> TrustedKey {
        match self {
            PrivateKey::P256(k) => TrustedKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => TrustedKey::P384(*k.verifying_key()),
            PrivateKey::P521(k) => TrustedKey::P521(p521_public(k)),
            PrivateKey::Rsa(k) => TrustedKey::Rsa(k.to_public_key()),
        }
    }

    fn jwk(&self) -> Value {
        let ec = |crv: &str, x: &[u8], y: &[u8]| json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        match self {
            PrivateKey::P256(k) => jwk_of(k.verifying_key()),
            PrivateKey::P384(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                ec(
                    "P-384",
                    p.x().map(|x| x.as_slice()).unwrap_or(&[]),
                    p.y().map(|y| y.as_slice()).unwrap_or(&[]),
                )
            }
            PrivateKey::P521(k) => {
                use p521::elliptic_curve::sec1::ToEncodedPoint;
                let p = p521_public(k).to_encoded_point(false);
                ec(
                    "P-521",
                    p.x().map(|x| x.as_slice()).unwrap_or(&[]),
                    p.y().map(|y| y.as_slice()).unwrap_or(&[]),
                )
            }
            PrivateKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                json!({
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(k.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(k.e().to_bytes_be()),
                })
            }
        }
    }

    fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
        match self {
            PrivateKey::P256(k) => {
                let s: Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            PrivateKey::P521(k) => {
                let s: p521::ecdsa::Signature = k.sign(input);
                s.to_bytes().to_vec()
            }
            PrivateKey::Rsa(k) => {
                use rsa::signature::SignatureEncoding;
                let sk = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone());
                sk.sign(input).to_vec()
            }
        }
    }
}

fn p521_signer(k: &p521::SecretKey) -> Result<p521::ecdsa::SigningKey, String> {
    p521::ecdsa::SigningKey::from_bytes(&k.to_bytes()).map_err(|e| format!("P-521 key: {e}"))
}

fn p521_public(k: &p521::ecdsa::SigningKey) -> p521::PublicKey {
    p521::PublicKey::from_secret_scalar(k.as_nonzero_scalar())
}

/// Sign with any supported key. With `x5c` (DER certificates, the signing
/// certificate first) the header carries the chain instead of a JWK; the
/// first certificate must hold this key.
pub fn sign_with(
    state: &State,
    key: &PrivateKey,
    x5c: &[Vec<u8>],
    include: &[String],
    exclude: &[String],
) -> Result<SignatureDoc, String> {
    use base64::engine::general_purpose::STANDARD;
    let mut header = json!({
        "alg": key.alg(),
        "typ": "PVS",
        "pvs": {"include": include, "exclude": exclude},
    });
    if x5c.is_empty() {
        header["jwk"] = key.jwk();
    } else {
        let leaf = Certificate::from_der(&x5c[0]).map_err(|e| format!("x5c: {e}"))?;
        if cert_key(&leaf)? != key.public() {
            return Err("x5c: the first certificate is not for the signing key".into());
        }
        header["x5c"] = json!(x5c.iter().map(|c| STANDARD.encode(c)).collect::<Vec<_>>());
    }
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
    let (_, body) = payload(state, include, exclude);
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(body));
    Ok(SignatureDoc {
        spec: SPEC_SIG.into(),
        protected,
        signature: URL_SAFE_NO_PAD.encode(key.sign_bytes(input.as_bytes())),
        extra: Map::new(),
    })
}

/// DER certificates of a PEM chain file.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in pem.split("-----END CERTIFICATE-----") {
        if let Some(start) = block.find("-----BEGIN CERTIFICATE-----") {
            let text = format!("{}-----END CERTIFICATE-----\n", &block[start..]);
            let cert =
                Certificate::from_pem(text.as_bytes()).map_err(|e| format!("certificate: {e}"))?;
            out.push(cert.to_der().map_err(|e| format!("certificate: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
}

/// The include/exclude globs of a signature's protected header.
pub fn globs_of(doc: &SignatureDoc) -> Option<(Vec<String>, Vec<String>)> {
    let header: Value = URL_SAFE_NO_PAD
        .decode(doc.protected.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())?;
    let list = |k: &str| -> Vec<String> {
        header["pvs"][k]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    Some((list("include"), list("exclude")))
}

/// Check one signature document against the state and the trust store;
/// returns the keys it covers.
pub fn verify(
    doc: &SignatureDoc,
    state: &State,
    trusted: &[TrustedKey],
) -> Result<BTreeSet<String>, String> {
    let header: Value = URL_SAFE_NO_PAD
        .decode(doc.protected.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("protected header is not base64url JSON")?;
    let alg = header["alg"].as_str().ok_or("no alg")?;
    if !matches!(alg, "ES256" | "ES384" | "ES512" | "RS256") {
        return Err(format!("algorithm {alg} is not supported by this build"));
    }
    let key = match header["x5c"].as_array() {
        Some(chain) => chain_key(chain, trusted)?,
        None => {
            let key = key_of_jwk(&header["jwk"])?;
            if !trusted.contains(&key) {
                return Err("signed with a key the device does not trust".into());
            }
            key
        }
    };
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
    key.verify(alg, input.as_bytes(), &raw)?;
    Ok(keys)
}

/// Why a state's signatures do not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The signature at `key` (`_sigs/NAME.json`) does not verify.
    #[error("{key}: {why}")]
    Signature { key: String, why: String },
    /// Strict mode: state keys no signature covers (all of them listed).
    #[error("strict mode: {} key(s) no signature covers: {}{}", keys.len(), keys.iter().take(5).cloned().collect::<Vec<_>>().join(", "), if keys.len() > 5 { ", …" } else { "" })]
    Uncovered { keys: Vec<String> },
}

/// Check every signature of `state` under `mode`: (what refuses the state,
/// what audit mode only reports).
pub fn check(state: &State, mode: Mode, trusted: &[TrustedKey]) -> (Vec<SigError>, Vec<SigError>) {
    check_with(state, mode, &TrustStore::new(trusted.to_vec()))
}

/// [`check`] against a [`TrustStore`] (built-in and OEM).
pub fn check_with(state: &State, mode: Mode, trust: &TrustStore) -> (Vec<SigError>, Vec<SigError>) {
    if mode == Mode::Disabled {
        return (Vec::new(), Vec::new());
    }
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for (key, entry) in state.entries() {
        if let Entry::Signature(doc) = entry {
            match trust.verify(doc, state) {
                Ok(keys) => covered.extend(keys),
                Err(why) => problems.push(SigError::Signature {
                    key: key.clone(),
                    why,
                }),
            }
        }
    }
    if mode == Mode::Strict {
        let keys: Vec<String> = state
            .entries()
            .keys()
            .filter(|k| {
                *k != "#spec"
                    && !k.starts_with("_sigs/")
                    && !k.ends_with("/src.json")
                    && !covered.contains(*k)
            })
            .cloned()
            .collect();
        if !keys.is_empty() {
            problems.push(SigError::Uncovered { keys });
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
