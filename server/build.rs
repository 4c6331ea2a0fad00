//! Builds the browser assets: installs the locked npm packages (only when
//! `web/package-lock.json` changed), type-checks the TypeScript with `tsc --noEmit`, bundles
//! every `web/src/*.ts` and `web/src/*.css` entry with esbuild's own binary, and writes
//! `$OUT_DIR/assets.rs`, which embeds each bundle with its content hash and a gzip copy.
//! Node.js and npm are build prerequisites; without them the build stops and says so.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

type BuildResult<T> = Result<T, String>;

fn main() {
    if let Err(message) = build() {
        // A build script reports by failing; the message is what the user reads.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn build() -> BuildResult<()> {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let web = manifest.join("web");
    let out = PathBuf::from(env("OUT_DIR")?).join("web");
    for watched in ["src", "package.json", "package-lock.json", "tsconfig.json"] {
        println!("cargo:rerun-if-changed={}", web.join(watched).display());
    }
    check_node()?;
    install(&web)?;
    run(
        Command::new(node_bin(&web, "tsc"))
            .args(["--noEmit", "-p", "tsconfig.json"])
            .current_dir(&web),
        "type-checking web/src with tsc",
    )?;
    let entries = entries(&web.join("src"))?;
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| format!("clearing {}: {e}", out.display()))?;
    }
    let mut esbuild = Command::new(esbuild_bin(&web));
    esbuild
        .args(&entries)
        .args([
            "--bundle",
            "--minify",
            "--format=iife",
            "--target=es2020",
            "--log-level=warning",
        ])
        .arg(format!("--outdir={}", out.display()))
        .current_dir(&web);
    run(&mut esbuild, "bundling web/src with esbuild")?;
    write_manifest(&out)
}

fn env(name: &str) -> BuildResult<String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn check_node() -> BuildResult<()> {
    let missing = |e: String| {
        format!(
            "dtop-server bundles its web pages at build time and needs Node.js (>= 20) and npm \
             on PATH (see README, Prerequisites): {e}"
        )
    };
    for tool in ["node", "npm"] {
        let output = Command::new(tool)
            .arg("--version")
            .output()
            .map_err(|e| missing(format!("`{tool} --version`: {e}")))?;
        if !output.status.success() {
            return Err(missing(format!("`{tool} --version` failed")));
        }
    }
    Ok(())
}

/// `npm ci` when the lockfile's hash differs from the one recorded at the last install.
fn install(web: &Path) -> BuildResult<()> {
    let lock = std::fs::read(web.join("package-lock.json"))
        .map_err(|e| format!("reading web/package-lock.json: {e}"))?;
    let want = hex(&Sha256::digest(&lock));
    let stamp = web.join("node_modules").join(".dtop-lock-sha256");
    if std::fs::read_to_string(&stamp).is_ok_and(|have| have.trim() == want) {
        return Ok(());
    }
    // Install scripts stay off: the packages we use ship their binaries as plain files.
    run(
        Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(web),
        "installing web/package-lock.json with `npm ci`",
    )?;
    std::fs::write(&stamp, want).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

fn node_bin(web: &Path, name: &str) -> PathBuf {
    web.join("node_modules").join(".bin").join(name)
}

/// esbuild's native binary from its platform package, or its launcher when that is absent.
fn esbuild_bin(web: &Path) -> PathBuf {
    let platforms = web.join("node_modules").join("@esbuild");
    std::fs::read_dir(&platforms)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin").join("esbuild"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| node_bin(web, "esbuild"))
}

/// Every `*.ts` and `*.css` directly in `src` (shared modules live in subfolders), sorted.
fn entries(src: &Path) -> BuildResult<Vec<String>> {
    let mut entries: Vec<String> = std::fs::read_dir(src)
        .map_err(|e| format!("reading {}: {e}", src.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| {
            (name.ends_with(".ts") && !name.ends_with(".d.ts")) || name.ends_with(".css")
        })
        .map(|name| format!("src/{name}"))
        .collect();
    entries.sort();
    Ok(entries)
}

fn run(command: &mut Command, what: &str) -> BuildResult<()> {
    let output = command
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", command.get_program()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes `assets.rs`: one `Asset` per bundle, named by content hash, with a gzip copy.
fn write_manifest(out: &Path) -> BuildResult<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| format!("reading {}: {e}", out.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("js" | "css")))
        .collect();
    files.sort();
    let mut code =
        String::from("/// Every bundle, built by build.rs.\npub static ASSETS: &[Asset] = &[\n");
    for path in files {
        let body = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("odd file name {}", path.display()))?;
        let (stem, ext) = name
            .rsplit_once('.')
            .ok_or_else(|| format!("no extension on {name}"))?;
        let hash = &hex(&Sha256::digest(&body))[..16];
        let gz_path = path.with_extension(format!("{ext}.gz"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(&body)
            .map_err(|e| format!("compressing {name}: {e}"))?;
        let gz = encoder
            .finish()
            .map_err(|e| format!("compressing {name}: {e}"))?;
        std::fs::write(&gz_path, gz).map_err(|e| format!("writing {}: {e}", gz_path.display()))?;
        let content_type = if ext == "js" {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        let _ = writeln!(
            code,
            "    Asset {{ name: {name:?}, url: \"/assets/{stem}-{hash}.{ext}\", content_type: {content_type:?}, \
             body: include_bytes!({:?}), gzip: include_bytes!({:?}) }},",
            path.display().to_string(),
            gz_path.display().to_string(),
        );
    }
    code.push_str("];\n");
    let target = out
        .parent()
        .ok_or("OUT_DIR has no parent")?
        .join("assets.rs");
    std::fs::write(&target, code).map_err(|e| format!("writing {}: {e}", target.display()))
}
