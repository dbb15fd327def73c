//! Building and running programs against the C ABI from tests: the cdylib and staticlib built
//! with the test's own profile, a C/C++ compiler call, a small model with a tokenizer.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use lowbit::checkpoint::synthetic::{self, Variant};
use lowbit::Checkpoint;

/// A fresh seed for a test's random inputs, or `LOWBIT_TEST_SEED` when set (to replay a run).
pub fn seed() -> u64 {
    std::env::var("LOWBIT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo test` builds the library only as an rlib; programs in C, C++ and Go need the cdylib
/// or the staticlib, so this builds them into the same target directory, with the profile this
/// test was built with. Returns the directory holding liblowbit.so and liblowbit.a. Built once
/// per test process.
pub fn build_native_libs() -> PathBuf {
    static LIB_DIR: OnceLock<PathBuf> = OnceLock::new();
    LIB_DIR.get_or_init(build_once).clone()
}

fn build_once() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile dir>/deps/<test>-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--lib", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // `cargo test` builds into target/debug with the test profile, `cargo test --release`
    // into target/release (release settings); build the libraries with the same settings.
    match profile_dir.file_name().and_then(|n| n.to_str()).unwrap() {
        "debug" => cargo.args(["--profile", "test"]),
        "release" => cargo.arg("--release"),
        custom => cargo.args(["--profile", custom]),
    };
    let status = cargo.status().expect("running cargo build --lib");
    assert!(status.success(), "cargo build --lib failed");
    for name in [shared_lib_name(), "liblowbit.a"] {
        assert!(
            profile_dir.join(name).is_file(),
            "{} was not built",
            profile_dir.join(name).display()
        );
    }
    profile_dir
}

pub fn shared_lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "liblowbit.dylib"
    } else {
        "liblowbit.so"
    }
}

/// The variable the dynamic loader reads library directories from.
pub fn library_path_var() -> &'static str {
    if cfg!(target_os = "macos") {
        "DYLD_LIBRARY_PATH"
    } else {
        "LD_LIBRARY_PATH"
    }
}

/// How a program links lowbit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Shared,
    Static,
}

/// System libraries a program linking liblowbit.a needs besides libc (what
/// `rustc --print native-static-libs` lists for this crate on Linux).
const STATIC_SYSTEM_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl"];

/// Compiles `sources` with `compiler` and `flags` against include/lowbit.h and liblowbit
/// (linked as `link` says) into a program in the test's scratch directory; panics with the
/// compiler's output on failure.
pub fn compile(
    compiler: &str,
    flags: &[&str],
    sources: &[PathBuf],
    link: Link,
    name: &str,
) -> PathBuf {
    let lib_dir = build_native_libs();
    let program =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let mut command = Command::new(compiler);
    command
        .args(flags)
        .arg("-I")
        .arg(root().join("include"))
        .args(sources);
    match link {
        Link::Shared => {
            command.arg("-L").arg(&lib_dir).arg("-llowbit");
        }
        Link::Static => {
            command
                .arg(lib_dir.join("liblowbit.a"))
                .args(STATIC_SYSTEM_LIBS);
        }
    }
    let compiled = command
        .arg("-o")
        .arg(&program)
        .output()
        .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
    assert!(
        compiled.status.success(),
        "compiling {name} failed:\n{}{}",
        String::from_utf8_lossy(&compiled.stdout),
        String::from_utf8_lossy(&compiled.stderr)
    );
    program
}

/// A C compiler: `$CC`, else `cc`.
pub fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// A C++ compiler: `$CXX`, else `c++`.
pub fn cxx_compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".into())
}

/// Runs `program` with `args`, the library directory on the loader's path; returns its output.
pub fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env(library_path_var(), build_native_libs())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// Standard output of a run that must succeed; panics with both streams otherwise.
pub fn stdout_of_success(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{what} exited with {}:\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

/// A small synthetic Llama checkpoint (256-token vocabulary, GQA) with a byte-level tokenizer,
/// written under the scratch directory as `name`: text functions run on it in milliseconds.
pub fn tiny_model_dir(name: &str) -> PathBuf {
    let base = synthetic::build(Variant::LlamaGqa, 11);
    let checkpoint = Checkpoint::from_parts(
        base.path().to_path_buf(),
        base.config().clone(),
        base.tensors().clone(),
        Some(synthetic::byte_tokenizer_json()),
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    checkpoint.save(&dir).unwrap();
    dir
}

/// A fresh scratch directory path (not created) for a test's outputs.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
