//! `cargo xtask package`: the Python wheel and the npm tarballs for the host platform,
//! in `target/package/`.
//!
//! - maturin builds the wheel from `bindings/python` (`bindings = "bin"`: the release
//!   `warren` binary as the wheel's script, beside the pure-Python `warren_broker`).
//!   That is the one release build; the npm platform package takes the same binary
//!   from `target/release/warren`.
//! - `npm pack` makes `warren-broker-VERSION.tgz` from `bindings/node/warren-broker`
//!   and `warren-broker-OS-CPU[-LIBC]-VERSION.tgz`, the platform package
//!   `@warren-broker/OS-CPU[-LIBC]` that holds the binary (the esbuild/Biome layout:
//!   the main package lists every platform package in `optionalDependencies`, and npm
//!   installs the one whose `os`/`cpu`/`libc` match).
//!
//! maturin comes from `$MATURIN` or PATH (`pip install maturin`), npm from PATH.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub fn package(args: Vec<String>) -> ExitCode {
    if let Some(unknown) = args.first() {
        eprintln!("xtask package: unexpected argument {unknown:?} (it takes none)");
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask package: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let out = target.join("package");
    // Stale artifacts of another version would be picked up by `pip install *.whl`.
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;

    let maturin = std::env::var("MATURIN").unwrap_or_else(|_| "maturin".into());
    eprintln!("xtask package: building the wheel (maturin, release)");
    run_tool(
        Command::new(&maturin)
            .current_dir(root.join("bindings/python"))
            .args(["build", "--release", "--quiet", "--out"])
            .arg(&out),
        "maturin",
        "install it with `pip install maturin` (or set MATURIN to its path)",
    )?;

    let binary = target.join("release").join(exe("warren"));
    if !binary.is_file() {
        return Err(format!("maturin built no {}", binary.display()));
    }
    let node_src = root.join("bindings/node/warren-broker");
    let version = package_version(&node_src.join("package.json"))?;
    let platform = npm_platform()?;
    let stage = target.join("package-stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .map_err(|e| format!("cannot clear {}: {e}", stage.display()))?;
    }

    // The platform package: the binary and a package.json that says where it runs.
    let platform_dir = stage.join(format!("warren-broker-{}", platform.name));
    std::fs::create_dir_all(platform_dir.join("bin")).map_err(|e| e.to_string())?;
    let staged_binary = platform_dir.join("bin").join(exe("warren"));
    std::fs::copy(&binary, &staged_binary)
        .map_err(|e| format!("cannot copy {}: {e}", binary.display()))?;
    std::fs::write(
        platform_dir.join("package.json"),
        platform.manifest(&version),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        platform_dir.join("README.md"),
        format!(
            "The `warren` binary of the npm package `warren-broker` for {}.\n\
             Install `warren-broker`; npm picks this package when it matches the platform.\n",
            platform.name
        ),
    )
    .map_err(|e| e.to_string())?;

    // The main package, copied so that packing never writes into the source tree.
    let main_dir = stage.join("warren-broker");
    copy_dir(&node_src, &main_dir)?;

    for dir in [&main_dir, &platform_dir] {
        eprintln!("xtask package: npm pack {}", dir.display());
        run_tool(
            Command::new("npm")
                .current_dir(dir)
                .args(["pack", "--silent", "--pack-destination"])
                .arg(&out),
            "npm",
            "install Node.js and npm (apt-get install nodejs npm)",
        )?;
    }

    let mut made: Vec<String> = std::fs::read_dir(&out)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    for name in made {
        println!("{}", out.join(name).display());
    }
    Ok(())
}

/// Runs a tool to completion; a missing tool or a failure becomes a sentence.
fn run_tool(command: &mut Command, name: &str, how_to_get: &str) -> Result<(), String> {
    match command.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{name} failed ({s})")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("cannot find {name}: {how_to_get}"))
        }
        Err(e) => Err(format!("cannot run {name}: {e}")),
    }
}

fn exe(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// The `"version"` of a package.json, read without a JSON parser: xtask keeps to the
/// standard library, and this file is ours.
fn package_version(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let rest = text
        .split_once("\"version\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(version, _)| version.to_string());
    rest.ok_or_else(|| format!("no \"version\" in {}", path.display()))
}

/// The host as npm names it (`process.platform`, `process.arch`, and on Linux the C
/// library, which npm ≥ 10 matches against a package's `libc`).
struct NpmPlatform {
    name: String,
    os: &'static str,
    cpu: &'static str,
    libc: Option<&'static str>,
}

impl NpmPlatform {
    fn manifest(&self, version: &str) -> String {
        let libc = match self.libc {
            Some(libc) => format!(",\n  \"libc\": [\"{libc}\"]"),
            None => String::new(),
        };
        format!(
            "{{\n  \"name\": \"@warren-broker/{name}\",\n  \"version\": \"{version}\",\n  \
             \"description\": \"The warren binary of warren-broker for {name}\",\n  \
             \"license\": \"MIT OR Apache-2.0\",\n  \
             \"files\": [\"bin/\", \"README.md\"],\n  \
             \"os\": [\"{os}\"],\n  \"cpu\": [\"{cpu}\"]{libc},\n  \
             \"preferUnplugged\": true\n}}\n",
            name = self.name,
            os = self.os,
            cpu = self.cpu,
        )
    }
}

fn npm_platform() -> Result<NpmPlatform, String> {
    let os = match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        "windows" => "win32",
        other => return Err(format!("no npm platform package for the OS {other}")),
    };
    let cpu = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => return Err(format!("no npm platform package for the CPU {other}")),
    };
    let musl = cfg!(target_env = "musl");
    let libc = (os == "linux").then_some(if musl { "musl" } else { "glibc" });
    let name = match libc {
        Some("musl") => format!("{os}-{cpu}-musl"),
        Some(_) => format!("{os}-{cpu}-gnu"),
        None => format!("{os}-{cpu}"),
    };
    Ok(NpmPlatform {
        name,
        os,
        cpu,
        libc,
    })
}

fn copy_dir(from: &Path, to: &PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    for entry in
        std::fs::read_dir(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?
    {
        let entry = entry.map_err(|e| e.to_string())?;
        let dest = to.join(entry.file_name());
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            if entry.file_name() == "node_modules" {
                continue;
            }
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest)
                .map_err(|e| format!("cannot copy {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}
