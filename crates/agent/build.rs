//! Embeds the commit the binaries are built from as `POSTERN_COMMIT`, for `--version` of
//! both `postern` and `postern-agent` (`postern_agent::VERSION`): `git describe --tags
//! --always`, so an untagged commit reads `c498ace`, plus `-dirty` when tracked files differ
//! from it.
//!
//! Outside a git checkout (a source tarball) it is `POSTERN_BUILD_COMMIT` when set (what
//! a packager knows), else `unknown`. The script runs again when HEAD, the branch it points
//! at or the index move; an edit that nobody has `git add`ed yet does not move them, so
//! `scripts/package` checks the packaged binaries name the exact state.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=POSTERN_BUILD_COMMIT");
    let mut watched = vec![
        "HEAD".to_owned(),
        "index".to_owned(),
        "packed-refs".to_owned(),
    ];
    if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        // Worktrees keep HEAD and the index apart from the shared refs: git knows where.
        if let Some(path) = git(&dir, &["rev-parse", "--git-path", &name]) {
            let path = dir.join(path);
            // A path that does not exist would make cargo run this script on every build.
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    // `describe --dirty` would rewrite the index (and so make this script run on every
    // build): `status --no-optional-locks` tells the same without writing.
    let commit = git(&dir, &["describe", "--tags", "--always"])
        .map(|commit| {
            let changed = git(
                &dir,
                &[
                    "--no-optional-locks",
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                ],
            );
            if changed.is_some() {
                format!("{commit}-dirty")
            } else {
                commit
            }
        })
        .or_else(|| std::env::var("POSTERN_BUILD_COMMIT").ok())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=POSTERN_COMMIT={commit}");
}
