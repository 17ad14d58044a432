//! Builds the web app (`web/`, TypeScript + Vite) into `web/dist`, which `src/web.rs`
//! embeds, so that `cargo build` alone yields a binary with the app. Needs Node.js and npm;
//! packages come from the npm registry via `npm ci` and the committed lock file.
//!
//! Packagers who build the app separately set `POSTERN_WEB_PREBUILT=1`: `web/dist` is then
//! embedded as it is.

use std::path::Path;
use std::process::Command;

fn main() {
    // Read when it runs, not baked in when it was compiled: a build script compiled for one
    // checkout may run for another that shares its target directory.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let web = Path::new(&manifest).join("../../web");
    for input in [
        "src",
        "public",
        "scripts",
        "index.html",
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "vite.config.ts",
    ] {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=POSTERN_WEB_PREBUILT");
    if std::env::var_os("POSTERN_WEB_PREBUILT").is_some() {
        if !web.join("dist/index.html").exists() {
            panic!(
                "POSTERN_WEB_PREBUILT is set but {} has no index.html",
                web.join("dist").display()
            );
        }
        return;
    }
    let installed = web.join("node_modules/.package-lock.json");
    let lock = web.join("package-lock.json");
    let stale = |a: &Path, b: &Path| match (
        a.metadata().and_then(|m| m.modified()),
        b.metadata().and_then(|m| m.modified()),
    ) {
        (Ok(a), Ok(b)) => a < b,
        _ => true,
    };
    if stale(&installed, &lock) {
        npm(&web, &["ci", "--no-audit", "--no-fund"]);
    }
    npm(&web, &["run", "build"]);
}

fn npm(dir: &Path, args: &[&str]) {
    let status = Command::new("npm").args(args).current_dir(dir).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`npm {}` in {} failed ({s}); see its output above",
            args.join(" "),
            dir.display()
        ),
        Err(e) => panic!(
            "cannot run npm ({e}): building Postern's web app needs Node.js 20 or newer with npm"
        ),
    }
}
