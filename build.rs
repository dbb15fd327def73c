//! Generates the C header from src/ffi with cbindgen into OUT_DIR (its path is exported to the
//! crate as LOWBIT_GENERATED_HEADER). include/lowbit.h, the committed copy, is overwritten
//! only when LOWBIT_UPDATE_HEADER=1; tests/c_api.rs checks that the two agree.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=LOWBIT_UPDATE_HEADER");

    let ffi_root = crate_dir.join("src/ffi/mod.rs");
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    config.header = Some(overview_comment(&ffi_root));
    config.after_includes = Some(version_macros());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(&ffi_root)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate the C header from src/ffi: {e}"));

    let generated = out_dir.join("lowbit.h");
    bindings.write_to_file(&generated);
    println!(
        "cargo:rustc-env=LOWBIT_GENERATED_HEADER={}",
        generated.display()
    );

    if env::var("LOWBIT_UPDATE_HEADER").as_deref() == Ok("1") {
        let committed = crate_dir.join("include/lowbit.h");
        fs::create_dir_all(committed.parent().expect("has a parent"))
            .and_then(|()| fs::copy(&generated, &committed))
            .unwrap_or_else(|e| panic!("writing {}: {e}", committed.display()));
    }
}

/// The `//!` docs of src/ffi/mod.rs as a C comment, so the header's overview and the Rust
/// module docs are one text.
fn overview_comment(ffi_root: &Path) -> String {
    let source = fs::read_to_string(ffi_root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", ffi_root.display()));
    let mut comment = String::from("/*\n * lowbit C API\n *\n");
    for line in source.lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!");
        let text = text.strip_prefix(' ').unwrap_or(text);
        if text.is_empty() {
            comment.push_str(" *\n");
        } else {
            comment.push_str(&format!(" * {text}\n"));
        }
    }
    comment.push_str(" */");
    comment
}

/// `LOWBIT_VERSION_*` macros from the package version.
fn version_macros() -> String {
    let part = |name: &str| env::var(name).unwrap_or_else(|_| panic!("{name} is set by cargo"));
    format!(
        "\n/** The version of this header; compare with lowbit_version() at run time. */\n\
         #define LOWBIT_VERSION_MAJOR {}\n\
         #define LOWBIT_VERSION_MINOR {}\n\
         #define LOWBIT_VERSION_PATCH {}\n\
         #define LOWBIT_VERSION \"{}\"",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH"),
        part("CARGO_PKG_VERSION"),
    )
}
