//! The ABI as a snapshot (tests/snapshots/abi__abi.snap): every symbol the shared library
//! exports with its C prototype, every status value, and the size, alignment and field offsets
//! of every struct of include/lowbit.h as a C compiler lays it out. Any change to the ABI is a
//! visible diff; review it, then accept it with `cargo insta review` (or INSTA_UPDATE=always).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{
    build_native_libs, c_compiler, compile, root, run, shared_lib_name, stdout_of_success, Link,
};

/// The header with comments removed.
fn header_code() -> String {
    let header = std::fs::read_to_string(root().join("include/lowbit.h")).unwrap();
    let mut code = String::new();
    let mut rest = header.as_str();
    while let Some(start) = rest.find("/*") {
        code.push_str(&rest[..start]);
        let end = rest[start..].find("*/").expect("comments are closed") + start + 2;
        rest = &rest[end..];
    }
    code.push_str(rest);
    code.lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Declarations (`;`-terminated, whitespace collapsed) between `extern "C" {` and its end.
fn prototypes(code: &str) -> Vec<String> {
    let start = code.find("extern \"C\" {").expect("an extern \"C\" block") + 12;
    let end = start
        + code[start..]
            .find("#ifdef __cplusplus")
            .expect("the block's end");
    let block: String = code[start..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    block
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty() && !d.starts_with('}'))
        .map(|d| d.replace("( ", "(").replace(" )", ")") + ";")
        .collect()
}

/// The function name of a prototype.
fn function_name(prototype: &str) -> String {
    let before_paren = &prototype[..prototype.find('(').unwrap()];
    before_paren.rsplit([' ', '*']).next().unwrap().to_string()
}

/// `(struct name, field names)` of every `typedef struct NAME { ... } NAME;`.
fn structs(code: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(start) = rest.find("typedef struct ") {
        let after = &rest[start + "typedef struct ".len()..];
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap();
        let name = after[..name_end].to_string();
        let body_start = after[name_end..].trim_start();
        if let Some(body) = body_start.strip_prefix('{') {
            let body_end = body.find('}').unwrap();
            let fields = body[..body_end]
                .split(';')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(|f| f.rsplit([' ', '*']).next().unwrap().to_string())
                .collect();
            out.push((name, fields));
        }
        rest = &after[name_end..];
    }
    out
}

/// `NAME = VALUE` of every enumerator.
fn enumerators(code: &str) -> Vec<String> {
    code.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("LOWBIT_") && l.contains(" = "))
        .map(|l| l.trim_end_matches(',').to_string())
        .collect()
}

/// The symbols the shared library exports whose names begin with `lowbit_`.
fn exported_symbols() -> BTreeSet<String> {
    let library = build_native_libs().join(shared_lib_name());
    let output = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&library)
        .output()
        .expect("running nm");
    assert!(output.status.success(), "nm failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("lowbit_"))
        .map(str::to_string)
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn abi_snapshot() {
    let code = header_code();
    let prototypes = prototypes(&code);
    let declared: BTreeSet<String> = prototypes.iter().map(|p| function_name(p)).collect();
    let exported = exported_symbols();
    assert_eq!(
        declared, exported,
        "the functions include/lowbit.h declares and the symbols liblowbit exports differ"
    );

    // A C program prints each struct's layout as the C compiler sees it.
    let structs = structs(&code);
    assert!(structs.len() >= 8, "found only {structs:?}");
    let mut program = String::from(
        "#include <stdalign.h>\n#include <stddef.h>\n#include <stdio.h>\n#include \"lowbit.h\"\n\
         int main(void) {\n",
    );
    for (name, fields) in &structs {
        program.push_str(&format!(
            "    printf(\"{name}: size %zu, align %zu\\n\", sizeof({name}), alignof({name}));\n"
        ));
        for field in fields {
            program.push_str(&format!(
                "    printf(\"    {field} @ %zu (%zu bytes)\\n\", offsetof({name}, {field}), \
                 sizeof((({name} *)0)->{field}));\n"
            ));
        }
    }
    program.push_str("    return 0;\n}\n");
    let source = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("abi-layout-{}.c", std::process::id()));
    std::fs::write(&source, program).unwrap();
    let binary = compile(
        &c_compiler(),
        &["-std=c11", "-Wall", "-Werror"],
        std::slice::from_ref(&source),
        Link::Shared,
        "abi-layout",
    );
    let layouts = stdout_of_success(&run(&binary, &[]), "the layout program");
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&binary);

    let mut snapshot = format!("# {} exported functions\n", prototypes.len());
    for prototype in &prototypes {
        snapshot.push_str(prototype);
        snapshot.push('\n');
    }
    snapshot.push_str("\n# callback types\n");
    for callback in code
        .split(';')
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| d.contains("typedef") && d.contains("(*"))
    {
        let callback = &callback[callback.find("typedef").unwrap()..];
        snapshot.push_str(&callback.replace("( ", "(").replace(" )", ")"));
        snapshot.push_str(";\n");
    }
    snapshot.push_str("\n# enumerators\n");
    for enumerator in enumerators(&code) {
        snapshot.push_str(&enumerator);
        snapshot.push('\n');
    }
    snapshot.push_str(&format!(
        "\n# struct layouts ({}, LP64 Linux)\n{layouts}",
        structs.len()
    ));
    insta::assert_snapshot!("abi", snapshot);
}
