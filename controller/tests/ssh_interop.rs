//! Signature interop with the stock OpenSSH tool, both directions: a bundle
//! signed by `touchline render --key` verifies with `ssh-keygen -Y verify`,
//! and a signature made by `ssh-keygen -Y sign` verifies with
//! `touchline verify`. A flipped byte in the bundle or the signature is
//! rejected by both.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::touchline;

fn ssh_keygen() -> Option<std::path::PathBuf> {
    touchline_testkit::require_tool("ssh-keygen", "apt-get install openssh-client")
}

fn ssh_verify(ssh: &Path, allowed: &Path, bundle: &[u8], sig: &Path) -> (bool, String) {
    let mut child = Command::new(ssh)
        .args(["-Y", "verify", "-f"])
        .arg(allowed)
        .args(["-I", "touchline", "-n", "bundle@touchline", "-s"])
        .arg(sig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bundle).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Flips one character inside the base64 body of an armored signature.
fn corrupt_signature(sig: &str) -> String {
    let mut lines: Vec<String> = sig.lines().map(str::to_owned).collect();
    let body = &mut lines[3];
    let c = body.as_bytes()[10];
    let replacement = if c == b'A' { 'B' } else { 'A' };
    body.replace_range(10..11, &replacement.to_string());
    lines.join("\n") + "\n"
}

#[test]
fn touchline_signatures_verify_with_ssh_keygen() {
    let Some(ssh) = ssh_keygen() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("ctl");
    let public = touchline()
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap()
        .stdout;
    let allowed = tmp.path().join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("touchline {}", String::from_utf8(public).unwrap()),
    )
    .unwrap();
    let out = tmp.path().join("out");
    touchline()
        .args(["render", "--all", "--out"])
        .arg(&out)
        .arg("--key")
        .arg(&key)
        .arg(touchline_testkit::repo_root().join("fleet-manifests"))
        .assert()
        .success();
    let bundle = std::fs::read(out.join("cesson-handball.json")).unwrap();
    let sig = out.join("cesson-handball.json.sig");

    let (ok, text) = ssh_verify(&ssh, &allowed, &bundle, &sig);
    assert!(ok, "ssh-keygen refused a touchline signature: {text}");
    assert!(
        text.contains("Good \"bundle@touchline\" signature for touchline"),
        "{text}"
    );

    // A flipped byte in the bundle: both refuse.
    let mut flipped = bundle.clone();
    flipped[bundle.len() / 2] ^= 0x01;
    let (ok, _) = ssh_verify(&ssh, &allowed, &flipped, &sig);
    assert!(!ok, "ssh-keygen accepted a modified bundle");
    let flipped_path = tmp.path().join("flipped.json");
    std::fs::write(&flipped_path, &flipped).unwrap();
    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&allowed)
        .arg(&flipped_path)
        .arg(&sig)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));

    // A flipped character in the signature: both refuse.
    let bad_sig = tmp.path().join("bad.sig");
    std::fs::write(
        &bad_sig,
        corrupt_signature(&std::fs::read_to_string(&sig).unwrap()),
    )
    .unwrap();
    let (ok, _) = ssh_verify(&ssh, &allowed, &bundle, &bad_sig);
    assert!(!ok, "ssh-keygen accepted a modified signature");
    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&allowed)
        .arg(out.join("cesson-handball.json"))
        .arg(&bad_sig)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

#[test]
fn ssh_keygen_signatures_verify_with_touchline() {
    let Some(ssh) = ssh_keygen() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    let st = Command::new(&ssh)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let bundle = tmp.path().join("bundle.json");
    let rendered = touchline()
        .args(["render", "--site", "nantes-handball"])
        .arg(touchline_testkit::repo_root().join("fleet-manifests"))
        .output()
        .unwrap();
    std::fs::write(&bundle, &rendered.stdout).unwrap();
    let sign = |ns: &str| {
        // ssh-keygen asks before overwriting (and exits 0 without signing).
        let _ = std::fs::remove_file(tmp.path().join("bundle.json.sig"));
        let st = Command::new(&ssh)
            .args(["-Y", "sign", "-f"])
            .arg(&key)
            .args(["-n", ns])
            .arg(&bundle)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        tmp.path().join("bundle.json.sig")
    };
    let sig = sign("bundle@touchline");
    let pubkey = key.with_extension("pub");

    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&pubkey)
        .arg(&bundle)
        .arg(&sig)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("OK: bundle for site nantes-handball"));

    // A flipped byte in the bundle.
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[5] ^= 0x20;
    let flipped = tmp.path().join("flipped.json");
    std::fs::write(&flipped, &bytes).unwrap();
    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&pubkey)
        .arg(&flipped)
        .arg(&sig)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&v.stderr).contains("does not match the bundle bytes"));

    // A flipped character in the signature.
    let bad = tmp.path().join("bad.sig");
    std::fs::write(
        &bad,
        corrupt_signature(&std::fs::read_to_string(&sig).unwrap()),
    )
    .unwrap();
    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&pubkey)
        .arg(&bundle)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));

    // A signature made for another purpose (namespace) is not a bundle signature.
    let sig = sign("file");
    let v = touchline()
        .arg("verify")
        .arg("--key")
        .arg(&pubkey)
        .arg(&bundle)
        .arg(&sig)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));
    let err = String::from_utf8_lossy(&v.stderr);
    assert!(
        err.contains("signature namespace is `file`, expected `bundle@touchline`"),
        "{err}"
    );
}
