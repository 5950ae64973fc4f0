//! The member web app (`web/`) in headless Chromium against this build's
//! `icnd`: its committed `dist/` is checked against a fresh build of
//! `web/src` (icnd embeds `dist/`), then two members in two browsers make
//! keys, start and join a co-op, pay each other and see it live, vote, and
//! look at their devices (`web/test/*.test.mjs`). Node packages are
//! installed when missing (`npm ci`, from the lock files); Chromium is
//! Debian's (`CHROMIUM`, default `/usr/bin/chromium`; `.ci/run` installs it).
//! Screenshots of each main screen are kept in
//! `<target>/tmp/web-screenshots/`.

use std::path::Path;
use std::process::Command;

fn npm(dir: &Path, args: &[&str], screenshots: &Path) {
    let out = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .env("ICND", env!("CARGO_BIN_EXE_icnd"))
        .env("ICN_WEB_SCREENSHOTS", screenshots)
        .output()
        .unwrap_or_else(|e| {
            panic!("npm {args:?} (Node 20 and npm are needed: .ci/run installs them): {e}")
        });
    assert!(
        out.status.success(),
        "npm {args:?} in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_web_app_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (sdk, web) = (root.join("sdk/typescript"), root.join("web"));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    for dir in [&sdk, &web] {
        if !dir.join("node_modules/.package-lock.json").exists() {
            npm(dir, &["ci", "--no-audit", "--no-fund"], &shots);
        }
    }
    // The test drives a member from a script with the SDK's build.
    npm(&sdk, &["run", "build"], &shots);
    npm(&web, &["run", "check-dist"], &shots);
    npm(&web, &["test"], &shots);
    for screen in ["1-welcome", "4-wallet-alice", "6-proposals", "7-devices"] {
        assert!(
            shots.join(format!("{screen}.png")).exists(),
            "no screenshot of {screen}"
        );
    }
}
