//! `pvr sig add|up|ls` with the key kinds pvr users have: RSA (RS256), EC
//! P-384 (ES384), P-521 (ES512) and an x5c chain to a (P-521, SHA-512) CA, keys from flags or environment;
//! what we sign also verifies with Python's jwcrypto (ci/test installs it).

use std::fs;
use std::path::Path;
use std::process::Command;

use pvstate::model::Entry;
use pvstate::State;

fn pvr_env(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvr"));
    cmd.arg("-C").arg(dir).args(args).env("HOME", dir);
    for v in [
        "PVR_SIG_KEY",
        "PVR_X5C_PATH",
        "PVR_SIG_CACERTS",
        "PVR_CONFIG_DIR",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn pvr(dir: &Path, args: &[&str]) -> (i32, String, String) {
    pvr_env(dir, args, &[])
}

fn ok(r: (i32, String, String)) -> String {
    assert_eq!(r.0, 0, "{}{}", r.1, r.2);
    r.1
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
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

/// Keys: RSA, P-384, P-521, and a P-521 CA with a code-signing P-256 leaf it
/// signs with SHA-512 (chain.pem = leaf + CA).
fn keys(d: &Path) {
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "rsa.key",
        ],
    );
    openssl(d, &["pkey", "-in", "rsa.key", "-pubout", "-out", "rsa.pub"]);
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "p384.key",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "p384.key", "-pubout", "-out", "p384.pub"],
    );
    openssl(
        d,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-out",
            "p521.key",
        ],
    );
    openssl(
        d,
        &["pkey", "-in", "p521.key", "-pubout", "-out", "p521.pub"],
    );
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=release CA",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=app signer",
        ],
    );
    fs::write(d.join("leaf.ext"), "extendedKeyUsage=codeSigning\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha512",
            "-out",
            "leaf.pem",
            "-days",
            "365",
            "-extfile",
            "leaf.ext",
        ],
    );
    openssl(
        d,
        &[
            "x509", "-in", "leaf.pem", "-pubkey", "-noout", "-out", "leaf.pub",
        ],
    );
    let chain = fs::read_to_string(d.join("leaf.pem")).unwrap()
        + &fs::read_to_string(d.join("ca.pem")).unwrap();
    fs::write(d.join("chain.pem"), chain).unwrap();
}

/// jwcrypto verifies signature `name` of the committed state with `public`.
fn jwcrypto_verifies(repo: &Path, name: &str, public: &Path) -> String {
    let (state, _) = State::parse_lenient(&fs::read(repo.join(".pvr/json")).unwrap()).unwrap();
    let Some(Entry::Signature(doc)) = state.get(&format!("_sigs/{name}.json")) else {
        panic!("no _sigs/{name}.json")
    };
    let (inc, exc) = pvstate::sig::globs_of(doc).unwrap();
    let (_, payload) = pvstate::sig::payload(&state, &inc, &exc);
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("sig.json"),
        serde_json::to_vec(doc).unwrap(),
    )
    .unwrap();
    fs::write(tmp.path().join("payload"), payload).unwrap();
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../ci/lib/jws_verify.py"
        ))
        .arg(tmp.path().join("sig.json"))
        .arg(tmp.path().join("payload"))
        .arg(public)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "jwcrypto: {text}");
    text
}

fn app(repo: &Path, name: &str, content: &str, verb: &str) {
    let rootfs = repo.join(format!("../rootfs-{name}"));
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/content"), content).unwrap();
    ok(pvr(
        repo,
        &[
            "app",
            verb,
            name,
            "--from",
            rootfs.to_str().unwrap(),
            "--mtime",
            "1700000000",
        ],
    ));
}

#[test]
fn rsa_p384_and_x5c_signatures_add_up_and_ls() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    keys(d);
    let repo = d.join("repo");
    fs::create_dir(&repo).unwrap();
    ok(pvr(&repo, &["init"]));
    app(&repo, "web", "v1", "add");
    app(&repo, "mqtt", "m1", "add");
    ok(pvr(&repo, &["commit"]));
    let p = |f: &str| d.join(f);

    // RSA (RS256) from --key.
    let out = ok(pvr(
        &repo,
        &[
            "sig",
            "add",
            "--part",
            "web",
            "--key",
            p("rsa.key").to_str().unwrap(),
        ],
    ));
    assert!(out.contains("RS256"), "{out}");
    assert!(jwcrypto_verifies(&repo, "web", &p("rsa.pub")).contains("alg=RS256"));

    // A leaf key with its x5c chain, both from the environment.
    let out = ok(pvr_env(
        &repo,
        &["sig", "add", "--part", "mqtt", "--noconfig"],
        &[
            ("PVR_SIG_KEY", &p("leaf.key")),
            ("PVR_X5C_PATH", &p("chain.pem")),
        ],
    ));
    assert!(out.contains("ES256, x5c"), "{out}");
    assert!(jwcrypto_verifies(&repo, "mqtt", &p("leaf.pub")).contains("include=['mqtt/**']"));

    // P-384 over chosen keys.
    ok(pvr(
        &repo,
        &[
            "sig",
            "add",
            "--raw",
            "apps",
            "--include",
            "*/run.json",
            "--key",
            p("p384.key").to_str().unwrap(),
        ],
    ));
    assert!(jwcrypto_verifies(&repo, "apps", &p("p384.pub")).contains("alg=ES384"));

    // P-521 (ES512).
    let out = ok(pvr(
        &repo,
        &[
            "sig",
            "add",
            "--raw",
            "configs",
            "--include",
            "*/src.json",
            "--key",
            p("p521.key").to_str().unwrap(),
        ],
    ));
    assert!(out.contains("ES512"), "{out}");
    assert!(jwcrypto_verifies(&repo, "configs", &p("p521.pub")).contains("alg=ES512"));

    // sig ls against a trust store of the RSA key, the P-384 key and the CA.
    let trust = p("trust.pem");
    fs::write(
        &trust,
        ["rsa.pub", "p384.pub", "p521.pub", "ca.pem"]
            .map(|f| fs::read_to_string(p(f)).unwrap())
            .concat(),
    )
    .unwrap();
    let out = ok(pvr(
        &repo,
        &["sig", "ls", "--cacerts", trust.to_str().unwrap()],
    ));
    for s in [
        "_sigs/web.json: verified",
        "_sigs/mqtt.json: verified",
        "_sigs/apps.json: verified",
        "_sigs/configs.json: verified",
    ] {
        assert!(out.contains(s), "{out}");
    }
    // Without the CA, the x5c signature does not verify.
    let (code, out, _) = pvr_env(&repo, &["sig", "ls"], &[("PVR_SIG_CACERTS", &p("rsa.pub"))]);
    assert_ne!(code, 0);
    assert!(
        out.contains("_sigs/mqtt.json: NOT VERIFIED") && out.contains("CA"),
        "{out}"
    );

    // One byte of a covered object id changed: refused.
    let json = fs::read_to_string(repo.join(".pvr/json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&json).unwrap();
    let id = state["web/root.squashfs"].as_str().unwrap();
    let flipped = format!(
        "{}{}",
        if id.starts_with('0') { "1" } else { "0" },
        &id[1..]
    );
    fs::write(repo.join(".pvr/json"), json.replace(id, &flipped)).unwrap();
    let (code, out, _) = pvr(&repo, &["sig", "ls", "--cacerts", trust.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("_sigs/web.json: NOT VERIFIED"), "{out}");
    fs::write(repo.join(".pvr/json"), json).unwrap();

    // An update leaves the signature stale; sig up signs every one again.
    app(&repo, "web", "v2", "update");
    ok(pvr(&repo, &["commit"]));
    let (code, out, _) = pvr(&repo, &["sig", "ls", "--cacerts", trust.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    let out = ok(pvr(
        &repo,
        &[
            "sig",
            "up",
            "--key",
            p("leaf.key").to_str().unwrap(),
            "--x5c",
            p("chain.pem").to_str().unwrap(),
        ],
    ));
    assert_eq!(out.matches("re-signed").count(), 4, "{out}");
    let out = ok(pvr(
        &repo,
        &["sig", "ls", "--cacerts", trust.to_str().unwrap()],
    ));
    assert_eq!(out.matches(": verified").count(), 4, "{out}");

    // Errors.
    let (code, _, err) = pvr(
        &repo,
        &[
            "sig",
            "add",
            "--part",
            "ghost",
            "--key",
            p("rsa.key").to_str().unwrap(),
        ],
    );
    assert!(code != 0 && err.contains("unknown part \"ghost\""), "{err}");
    let (code, _, err) = pvr(&repo, &["sig", "add", "--part", "web"]);
    assert!(code != 0 && err.contains("no signing key"), "{err}");
    let (code, _, err) = pvr(
        &repo,
        &[
            "sig",
            "add",
            "--part",
            "web",
            "--key",
            p("ca.pem").to_str().unwrap(),
        ],
    );
    assert!(
        code != 0 && err.contains("not an EC P-256/P-384/P-521 or RSA private key"),
        "{err}"
    );
    let (code, _, err) = pvr(
        &repo,
        &[
            "sig",
            "add",
            "--part",
            "web",
            "--key",
            p("rsa.key").to_str().unwrap(),
            "--x5c",
            p("chain.pem").to_str().unwrap(),
        ],
    );
    assert!(
        code != 0 && err.contains("not for the signing key"),
        "{err}"
    );
}
