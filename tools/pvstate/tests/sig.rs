//! pvs@2 signing and verification of a gateway state.

mod common;

use common::*;
use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey, LineEnding};
use pvstate::model::Entry;
use pvstate::sig::{check, part_globs, sign, trust_store_from_pem, verify, Mode};
use pvstate::State;
use serde_json::json;

fn key() -> SigningKey {
    SigningKey::random(&mut rand_core::OsRng)
}

fn signed(state: &mut State, name: &str, key: &SigningKey) {
    let (inc, exc) = part_globs(name);
    let doc = sign(state, key, &inc, &exc);
    state.insert(format!("_sigs/{name}.json"), Entry::Signature(doc));
}

#[test]
fn a_signed_part_verifies_and_tampering_breaks_it() {
    let k = key();
    let pem = k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    let trusted = trust_store_from_pem(&pem).unwrap();
    let mut state = State::parse(GATEWAY.as_bytes()).unwrap();
    state.remove("_sigs/edge-app.json");
    signed(&mut state, "edge-app", &k);
    // The signature survives a canonical round trip.
    let state = State::parse(&state.to_canonical()).unwrap();
    let Some(Entry::Signature(doc)) = state.get("_sigs/edge-app.json") else {
        panic!()
    };
    let keys = verify(doc, &state, &trusted).unwrap();
    assert!(
        keys.contains("edge-app/run.json")
            && keys.contains("_config/edge-app/etc/edge-app/rules.json")
    );
    assert!(!keys.contains("edge-app/src.json") && !keys.contains("os/run.json"));
    // Changing a covered key breaks it; changing another part does not.
    let mut v = state.to_value();
    v["os/run.json"]["group"] = json!("platform");
    let other = State::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(verify(doc, &other, &trusted).is_ok());
    v["edge-app/run.json"]["status_goal"] = json!("STARTED");
    let tampered = State::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        verify(doc, &tampered, &trusted).unwrap_err(),
        "the signature does not match the state's content"
    );
    // Another key is not trusted.
    let stranger = trust_store_from_pem(
        &key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    assert!(verify(doc, &state, &stranger)
        .unwrap_err()
        .contains("does not trust"));
}

#[test]
fn modes_decide_what_is_refused() {
    let k = key();
    let trusted =
        trust_store_from_pem(&k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap())
            .unwrap();
    let mut state = State::parse(GATEWAY.as_bytes()).unwrap();
    state.remove("_sigs/edge-app.json");
    signed(&mut state, "edge-app", &k);
    // Lenient: unsigned parts are fine as long as the signatures present verify.
    assert!(check(&state, Mode::Lenient, &trusted).0.is_empty());
    // Strict: every key must be covered.
    let (refused, _) = check(&state, Mode::Strict, &trusted);
    match &refused[..] {
        [pvstate::sig::SigError::Uncovered { keys }] => {
            assert!(keys.iter().any(|k| k == "bsp/kernel.img"), "{keys:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(refused[0].to_string().starts_with("strict mode:"));
    // Covering everything satisfies strict.
    let all = sign(
        &state,
        &k,
        &["**".into()],
        &["**/src.json".into(), "_sigs/**".into()],
    );
    state.insert("_sigs/all.json", Entry::Signature(all));
    assert!(check(&state, Mode::Strict, &trusted).0.is_empty());
    // Audit reports but never refuses; disabled does not look.
    let untrusted: Vec<_> = Vec::new();
    let (refused, warned) = check(&state, Mode::Audit, &untrusted);
    assert!(refused.is_empty() && !warned.is_empty());
    assert_eq!(check(&state, Mode::Disabled, &untrusted), (vec![], vec![]));
    // A signature the device cannot trust is named by its key.
    let (refused, _) = check(&state, Mode::Lenient, &untrusted);
    assert!(
        refused.iter().all(|r| matches!(r, pvstate::sig::SigError::Signature { key, .. } if key.starts_with("_sigs/"))),
        "{refused:?}"
    );
    assert!(!refused.is_empty());
}

/// Sign the `edge-app` part by hand with another algorithm, as pvr would.
fn foreign_signature(
    state: &State,
    alg: &str,
    jwk: serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> pvstate::model::SignatureDoc {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let (inc, exc) = part_globs("edge-app");
    let header =
        json!({"alg": alg, "typ": "PVS", "jwk": jwk, "pvs": {"include": inc, "exclude": exc}});
    let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
    let (_, payload) = pvstate::sig::payload(state, &inc, &exc);
    let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
    pvstate::model::SignatureDoc {
        spec: "pvs@2".into(),
        protected,
        signature: URL_SAFE_NO_PAD.encode(sign(input.as_bytes())),
        extra: Default::default(),
    }
}

#[test]
fn rs256_and_es384_signatures_verify() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rsa::pkcs8::EncodePublicKey as _;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    let state = State::parse(GATEWAY.as_bytes()).unwrap();
    let mut tampered_v = state.to_value();
    tampered_v["edge-app/run.json"]["group"] = json!("platform");
    let tampered = State::parse(&serde_json::to_vec(&tampered_v).unwrap()).unwrap();

    let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
    let public = rsa_key.to_public_key();
    let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()), "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be())});
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key);
    let doc = foreign_signature(&state, "RS256", jwk, |m| signer.sign(m).to_vec());
    let trusted = trust_store_from_pem(&public.to_public_key_pem(LineEnding::LF).unwrap()).unwrap();
    assert!(verify(&doc, &state, &trusted)
        .unwrap()
        .contains("edge-app/run.json"));
    assert!(verify(&doc, &tampered, &trusted).is_err());

    let ec = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = ec.verifying_key().to_encoded_point(false);
    let jwk = json!({"kty": "EC", "crv": "P-384", "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()), "y": URL_SAFE_NO_PAD.encode(point.y().unwrap())});
    let doc = foreign_signature(&state, "ES384", jwk, |m| {
        let s: p384::ecdsa::Signature = ec.sign(m);
        s.to_bytes().to_vec()
    });
    let trusted = trust_store_from_pem(
        &ec.verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    assert!(verify(&doc, &state, &trusted).is_ok());
    assert!(verify(&doc, &tampered, &trusted).is_err());
    // An algorithm that does not fit its key is refused.
    let doc = foreign_signature(
        &state,
        "ES256",
        json!({"kty": "EC", "crv": "P-384", "x": "", "y": ""}),
        |_| vec![0; 64],
    );
    assert!(verify(&doc, &state, &trusted).is_err());
}

#[test]
fn our_signatures_verify_with_an_independent_jws_implementation() {
    // Python's jwcrypto (ci/test installs it) checks what we sign.
    let k = key();
    let mut state = State::parse(GATEWAY.as_bytes()).unwrap();
    state.remove("_sigs/edge-app.json");
    signed(&mut state, "edge-app", &k);
    let Some(Entry::Signature(doc)) = state.get("_sigs/edge-app.json") else {
        panic!()
    };
    let (inc, exc) = part_globs("edge-app");
    let (_, payload) = pvstate::sig::payload(&state, &inc, &exc);
    let tmp = tempfile::tempdir().unwrap();
    let (sig, body, pem) = (
        tmp.path().join("sig.json"),
        tmp.path().join("payload"),
        tmp.path().join("key.pem"),
    );
    std::fs::write(&sig, serde_json::to_vec(doc).unwrap()).unwrap();
    std::fs::write(&body, &payload).unwrap();
    std::fs::write(
        &pem,
        k.verifying_key().to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ci/lib/jws_verify.py");
    let run = |payload_file: &std::path::Path| {
        std::process::Command::new("python3")
            .arg(script)
            .arg(&sig)
            .arg(payload_file)
            .arg(&pem)
            .output()
            .unwrap()
    };
    let out = run(&body);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named 'jwcrypto'"),
        "install jwcrypto (pip install jwcrypto; ci/test does)"
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("verified: alg=ES256 typ=PVS"), "{text}");
    // One byte of a covered object id changed: no longer verifies.
    let mut bytes = payload;
    let needle = b"\"edge-app/root.squashfs\":\"";
    let pos = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len();
    bytes[pos] = if bytes[pos] == b'0' { b'1' } else { b'0' };
    std::fs::write(&body, &bytes).unwrap();
    let out = run(&body);
    assert!(!out.status.success(), "a changed object id must not verify");
}

/// Run openssl in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (ci/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a leaf it signs (P-384), the leaf for code signing or not.
fn make_pki(dir: &std::path::Path, ca: &str, leaf: &str, code_signing: bool) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
            "-subj",
            &format!("/CN={ca}"),
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    let ext = if code_signing {
        "extendedKeyUsage=codeSigning\n"
    } else {
        "extendedKeyUsage=serverAuth\n"
    };
    issue(dir, ca, leaf, "P-384", ext);
}

#[test]
fn es384_signatures_with_an_x5c_chain_to_a_trusted_ca() {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;
    use p256::pkcs8::DecodePrivateKey;
    use rsa::signature::Signer;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    make_pki(d, "dev-ca", "signer", true);
    make_pki(d, "other-ca", "stranger", true);
    make_pki(d, "dev-ca2", "webserver", false);
    let state = State::parse(GATEWAY.as_bytes()).unwrap();
    // The way pvr signs with --x5c: the chain in the protected header.
    let sign_with = |leaf: &str| {
        let key = p384::ecdsa::SigningKey::from_pkcs8_pem(
            &std::fs::read_to_string(d.join(format!("{leaf}.key"))).unwrap(),
        )
        .unwrap();
        let x5c = vec![STANDARD.encode(std::fs::read(d.join(format!("{leaf}.der"))).unwrap())];
        let (inc, exc) = part_globs("edge-app");
        let header = json!({"alg": "ES384", "typ": "PVS", "x5c": x5c, "pvs": {"include": inc, "exclude": exc}});
        let protected = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let (_, payload) = pvstate::sig::payload(&state, &inc, &exc);
        let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
        let sig: p384::ecdsa::Signature = key.sign(input.as_bytes());
        pvstate::model::SignatureDoc {
            spec: "pvs@2".into(),
            protected,
            signature: URL_SAFE_NO_PAD.encode(sig.to_bytes()),
            extra: Default::default(),
        }
    };
    let ca = std::fs::read_to_string(d.join("dev-ca.pem")).unwrap();
    let trusted = trust_store_from_pem(&ca).unwrap();
    let good = sign_with("signer");
    assert!(verify(&good, &state, &trusted)
        .unwrap()
        .contains("edge-app/run.json"));
    // One byte of a covered object id changed.
    let mut v = state.to_value();
    let id = v["edge-app/root.squashfs"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        if id.starts_with('0') { "1" } else { "0" },
        &id[1..]
    );
    v["edge-app/root.squashfs"] = json!(flipped);
    let tampered = State::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
    assert_eq!(
        verify(&good, &tampered, &trusted).unwrap_err(),
        "the signature does not match the state's content"
    );
    // A chain to a CA the device does not trust.
    let err = verify(&sign_with("stranger"), &state, &trusted).unwrap_err();
    assert!(
        err.contains("does not lead to a CA the device trusts"),
        "{err}"
    );
    // A certificate that is not for code signing.
    let trusted2 =
        trust_store_from_pem(&std::fs::read_to_string(d.join("dev-ca2.pem")).unwrap()).unwrap();
    let err = verify(&sign_with("webserver"), &state, &trusted2).unwrap_err();
    assert!(err.contains("not for code signing"), "{err}");
}

/// Run one of ci/lib's jwcrypto scripts; a missing jwcrypto fails loudly.
fn jwcrypto(script: &str, args: &[&std::path::Path]) -> (bool, String) {
    let script = format!("{}/../../ci/lib/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("No module named 'jwcrypto'"),
        "install jwcrypto (pip install jwcrypto; ci/test does)"
    );
    (out.status.success(), text)
}

#[test]
fn an_es512_signature_made_by_jwcrypto_verifies_and_ours_verify_there() {
    let mut state = State::parse(GATEWAY.as_bytes()).unwrap();
    state.remove("_sigs/edge-app.json");
    let (inc, exc) = part_globs("edge-app");
    let (_, payload) = pvstate::sig::payload(&state, &inc, &exc);
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    std::fs::write(p("payload"), &payload).unwrap();
    std::fs::write(
        p("header.json"),
        json!({"typ": "PVS", "pvs": {"include": inc, "exclude": exc}}).to_string(),
    )
    .unwrap();
    let (ok, text) = jwcrypto(
        "jws_sign.py",
        &[
            std::path::Path::new("ES512"),
            std::path::Path::new("P-521"),
            &p("payload"),
            &p("header.json"),
            &p("sig.json"),
            &p("key.pem"),
        ],
    );
    assert!(ok, "{text}");
    let doc: pvstate::model::SignatureDoc =
        serde_json::from_slice(&std::fs::read(p("sig.json")).unwrap()).unwrap();
    let pem = std::fs::read_to_string(p("key.pem")).unwrap();
    let trusted = trust_store_from_pem(&pem).unwrap();
    let covered = verify(&doc, &state, &trusted).unwrap();
    assert!(covered.contains("edge-app/run.json"), "{covered:?}");
    // The same signature over a changed state, or under another key: refused.
    let mut tampered_v = state.to_value();
    tampered_v["edge-app/run.json"]["group"] = json!("platform");
    let tampered = State::parse(&serde_json::to_vec(&tampered_v).unwrap()).unwrap();
    assert!(verify(&doc, &tampered, &trusted).is_err());
    let other = trust_store_from_pem(
        &key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    )
    .unwrap();
    assert!(verify(&doc, &state, &other).is_err());

    // Our ES512 signature, with a P-521 key from openssl's PEM, verifies
    // here and with jwcrypto; a changed payload does not.
    let private = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
        ])
        .output()
        .expect("openssl (ci/test installs it)");
    assert!(private.status.success());
    let key =
        pvstate::sig::PrivateKey::from_pem(&String::from_utf8(private.stdout).unwrap()).unwrap();
    assert_eq!(key.alg(), "ES512");
    let ours = pvstate::sig::sign_with(&state, &key, &[], &inc, &exc).unwrap();
    let mine = vec![key.public()];
    assert!(verify(&ours, &state, &mine).is_ok());
    assert!(verify(&ours, &tampered, &mine).is_err());
    let pvstate::sig::TrustedKey::P521(public) = key.public() else {
        panic!("a P-521 key")
    };
    std::fs::write(
        p("ours.pem"),
        public.to_public_key_pem(LineEnding::LF).unwrap(),
    )
    .unwrap();
    std::fs::write(p("ours.json"), serde_json::to_vec(&ours).unwrap()).unwrap();
    let (ok, text) = jwcrypto(
        "jws_verify.py",
        &[&p("ours.json"), &p("payload"), &p("ours.pem")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("verified: alg=ES512"), "{text}");
    let mut bytes = payload.clone();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(p("payload"), &bytes).unwrap();
    let (ok, _) = jwcrypto(
        "jws_verify.py",
        &[&p("ours.json"), &p("payload"), &p("ours.pem")],
    );
    assert!(!ok, "a changed payload must not verify");
}

/// A certificate `name` (new EC key on `curve`) that CA `issuer` signs with
/// `ext` (openssl extension lines); also `name.der`.
fn issue(dir: &std::path::Path, issuer: &str, name: &str, curve: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{issuer}.pem"),
            "-CAkey",
            &format!("{issuer}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "365",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-in",
            &format!("{name}.pem"),
            "-outform",
            "DER",
            "-out",
            &format!("{name}.der"),
        ],
    );
}

#[test]
fn an_oem_store_chains_to_the_built_in_one_and_may_not_sign_the_bsp() {
    use pvstate::sig::{check_with, PrivateKey, TrustStore};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    // The vendor's root CA (built in), an OEM CA it certifies, a signer the
    // OEM certifies; and an OEM CA nobody certifies.
    make_pki(d, "vendor", "vendor-signer", true);
    let ca_ext = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n";
    issue(d, "vendor", "oem", "P-256", ca_ext);
    issue(
        d,
        "oem",
        "oem-signer",
        "P-256",
        "extendedKeyUsage=codeSigning\n",
    );
    make_pki(d, "rogue", "rogue-signer", true);
    issue(
        d,
        "vendor",
        "not-a-ca",
        "P-256",
        "extendedKeyUsage=codeSigning\n",
    );

    let root = TrustStore::new(trust_store_from_pem(&read("vendor.pem")).unwrap());
    let (trust, refused) = root.clone().with_oem(
        trust_store_from_pem(&(read("oem.pem") + &read("rogue.pem") + &read("not-a-ca.pem")))
            .unwrap(),
    );
    assert_eq!(trust.len(), (1, 1), "{refused:?}");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains("CN=rogue") && refused[0].contains("does not chain"));
    assert!(refused[1].contains("CN=not-a-ca") && refused[1].contains("not a CA"));

    let state = State::parse(GATEWAY.as_bytes()).unwrap();
    let signer = |name: &str| {
        (
            PrivateKey::from_pem(&read(&format!("{name}.key"))).unwrap(),
            vec![std::fs::read(d.join(format!("{name}.der"))).unwrap()],
        )
    };
    let sign = |name: &str, include: &str| {
        let (key, x5c) = signer(name);
        pvstate::sig::sign_with(&state, &key, &x5c, &[include.into()], &[]).unwrap()
    };
    // The OEM signs an app: it verifies with the OEM store, not without it.
    let app = sign("oem-signer", "edge-app/**");
    assert!(trust
        .verify(&app, &state)
        .unwrap()
        .contains("edge-app/run.json"));
    assert!(root.verify(&app, &state).is_err());
    // ...but not the BSP, which only the built-in store may anchor.
    let bsp = sign("oem-signer", "bsp/**");
    let err = trust.verify(&bsp, &state).unwrap_err();
    assert!(err.contains("may not cover the BSP (bsp/"), "{err}");
    assert!(trust
        .verify(&sign("vendor-signer", "bsp/**"), &state)
        .is_ok());
    // The refused OEM CA anchors nothing.
    assert!(trust
        .verify(&sign("rogue-signer", "edge-app/**"), &state)
        .is_err());
    // check_with reports by signature key.
    let mut with_sig = state.to_value();
    with_sig["_sigs/bsp.json"] = serde_json::to_value(&bsp).unwrap();
    let with_sig = State::parse(&serde_json::to_vec(&with_sig).unwrap()).unwrap();
    let (refusals, _) = check_with(&with_sig, Mode::Lenient, &trust);
    let bsp_refusal = refusals
        .iter()
        .map(ToString::to_string)
        .find(|r| r.starts_with("_sigs/bsp.json"))
        .expect("the OEM-signed BSP is refused");
    assert!(
        bsp_refusal.contains("signed under the OEM"),
        "{bsp_refusal}"
    );
}
