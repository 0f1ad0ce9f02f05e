//! Guests built with the plugin SDKs, from the examples in the source tree: the realism the
//! WAT guests lack (an SDK's own allocator, context bookkeeping, status handling, start-up).
//!
//! They are built on demand with the SDK's own tool (cargo for a wasm target, npm for
//! AssemblyScript), into the example's own target directory, once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::Context;

/// How an SDK guest is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkBuild {
    /// `cargo build --release --target TARGET` of the example's workspace.
    Cargo {
        /// The wasm target, e.g. `wasm32-wasip1`.
        target: &'static str,
    },
    /// `npm ci` (when `node_modules` is missing), then `npm run build`.
    Npm,
}

/// Where an SDK guest comes from.
#[derive(Debug, Clone, Copy)]
pub struct Sdk {
    /// The example's directory, relative to the source tree's root.
    pub dir: &'static str,
    /// How to build it.
    pub build: SdkBuild,
    /// The built module, relative to `dir` (for cargo, to `target/<target>/release`).
    pub artifact: &'static str,
    /// The ABI version the SDK speaks (`http_handler`, `0.2.0`, `0.2.1`).
    pub version: &'static str,
    /// The proxy-wasm root id the guest registers under, if it needs one.
    pub root_id: Option<&'static str>,
}

/// The source tree this crate was built from (the SDK examples live there).
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Builds of this process that succeeded: (dir, build).
static BUILT: Mutex<Vec<(&'static str, SdkBuild)>> = Mutex::new(Vec::new());

/// Builds `sdk` (once per process and example) and returns the module's path.
pub fn build(sdk: &Sdk) -> anyhow::Result<PathBuf> {
    let artifact = build_dir(sdk.dir, sdk.build)?.join(sdk.artifact);
    if !artifact.is_file() {
        anyhow::bail!("building {} did not make {}", sdk.dir, artifact.display());
    }
    Ok(artifact)
}

/// Builds the example in `dir` (relative to the source tree; once per process) and returns
/// where its modules are: `target/<target>/release` for cargo, the example's directory for npm.
pub fn build_dir(dir: &'static str, how: SdkBuild) -> anyhow::Result<PathBuf> {
    let root = source_root().join(dir);
    if !root.is_dir() {
        anyhow::bail!(
            "SDK guests are built from the source tree, and {} is not there",
            root.display()
        );
    }
    let out = match how {
        SdkBuild::Cargo { target } => root.join("target").join(target).join("release"),
        SdkBuild::Npm => root.clone(),
    };
    // Held while building: two runs in one process must not run npm in one directory at once.
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.contains(&(dir, how)) {
        return Ok(out);
    }
    match how {
        SdkBuild::Cargo { target } => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--release", "--target", target, "--manifest-path"])
                .arg(root.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(root.join("target"))
                // Flags meant for the host build would break the wasm build.
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS");
            let what = format!(
                "building {dir} for {target} (is the target installed? `rustup target add {target}`)"
            );
            run(cmd, &what)?;
        }
        SdkBuild::Npm => {
            if !root.join("node_modules").is_dir() {
                let mut cmd = Command::new("npm");
                cmd.args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(&root);
                run(
                    cmd,
                    &format!("npm ci in {dir} (are node and npm installed?)"),
                )?;
            }
            let mut cmd = Command::new("npm");
            cmd.args(["run", "build"]).current_dir(&root);
            run(cmd, &format!("npm run build in {dir}"))?;
        }
    }
    built.push((dir, how));
    Ok(out)
}

/// Runs `cmd` with its output on this process's stderr; an error saying `what` if it fails.
fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdout(std::process::Stdio::null())
        .output()
        .with_context(|| what.to_string())?;
    if !out.status.success() {
        anyhow::bail!(
            "{what}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
