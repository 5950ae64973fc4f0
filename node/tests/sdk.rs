//! The TypeScript SDK (`sdk/typescript`, `@icn/client`), tested against a
//! real `icnd` as part of the Rust suite: its Node packages are installed
//! when missing (`npm ci`, from the lock file), it is built, its generated
//! types are checked against the committed OpenAPI document, and its tests
//! (Node's test runner) run against this build's `icnd`.

use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str]) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("ICND", env!("CARGO_BIN_EXE_icnd"))
        .output()
        .unwrap_or_else(|e| {
            panic!("npm {args:?} (Node 20 and npm are needed: .ci/run installs them): {e}")
        });
    assert!(
        out.status.success(),
        "npm {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_typescript_sdk_passes_its_tests_against_a_real_icnd() {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/typescript");
    if !sdk.join("node_modules/.package-lock.json").exists() {
        npm(&sdk, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(&sdk, &["run", "build"]);
    npm(&sdk, &["run", "check-schema"]);
    npm(&sdk, &["test"]);
}
