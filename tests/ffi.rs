//! Builds and runs the C, C++ and Python programs in ffi-tests/ against the library
//! that `cargo test` just built (target/<profile>/libtarn.so).
//!
//! C and C++ are compiled with -Wall -Wextra -Werror, and with
//! -fsanitize=address,undefined when the compiler can link a sanitized program here.
//! Each program exits 0 when all its checks pass and prints what failed otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding a libtarn.so built from the current sources.
///
/// The cdylib that `cargo test` leaves in <target>/<profile>/deps cannot be trusted: a
/// crate that is also a cdylib gets unhashed file names, so `cargo build` (which builds
/// it with other, non-dev features) and `cargo test` overwrite each other's files there
/// while each keeps believing its own copy is fresh. So this builds the library into a
/// target directory of its own, <target>/ffi-lib (cargo's lock is free while tests run;
/// the build is incremental after the first time), and links the programs against it.
fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let release = profile_dir.file_name().and_then(|n| n.to_str()) == Some("release");
        let target = profile_dir.parent().expect("target").join("ffi-lib");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "--lib", "--target-dir"])
            .arg(&target)
            .current_dir(root());
        if release {
            build.arg("--release");
        }
        let st = build.status().expect("run cargo build --lib");
        assert!(st.success(), "cargo build --lib failed");
        let dir = target.join(if release { "release" } else { "debug" });
        assert!(
            dir.join("libtarn.so").exists(),
            "no libtarn.so in {}",
            dir.display()
        );
        dir
    })
    .clone()
}

fn out_dir() -> PathBuf {
    let d = lib_dir().join("ffi-tests");
    std::fs::create_dir_all(&d).expect("create ffi-tests output directory");
    d
}

/// Whether `compiler` can build and run a program with ASan + UBSan here.
fn sanitizers_work(compiler: &str, ext: &str) -> bool {
    let dir = out_dir();
    let src = dir.join(format!("probe-{compiler}.{ext}"));
    let exe = dir.join(format!("probe-{compiler}"));
    std::fs::write(&src, "int main(void) { return 0; }\n").expect("write probe");
    let built = Command::new(compiler)
        .args(["-fsanitize=address,undefined"])
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .is_ok_and(|o| o.status.success());
    built
        && Command::new(&exe)
            .output()
            .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        out.status.success(),
        "{what} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
}

fn compile_and_run(compiler: &str, std: &str, src: &Path, extra: &[&str]) {
    let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("c");
    let name = src.file_stem().and_then(|s| s.to_str()).expect("file name");
    let exe = out_dir().join(format!("{name}-{ext}"));
    let lib = lib_dir();
    let mut cc = Command::new(compiler);
    cc.args([std, "-g", "-Wall", "-Wextra", "-Werror"])
        .args(extra)
        .arg("-I")
        .arg(root().join("include"))
        .arg(src)
        .arg("-o")
        .arg(&exe)
        .arg("-L")
        .arg(&lib)
        .arg("-ltarn")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lpthread");
    if sanitizers_work(compiler, ext) {
        cc.args([
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ]);
    } else {
        println!("{compiler}: sanitizers unavailable, building {name} without them");
    }
    run(&mut cc, &format!("{compiler} {}", src.display()));
    let mut prog = Command::new(&exe);
    prog.current_dir(root())
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1");
    run(&mut prog, &exe.display().to_string());
}

fn sources(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("ffi-tests").join(dir))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().and_then(|e| e.to_str()) == Some(ext));
    v.sort();
    assert!(!v.is_empty(), "no .{ext} programs in ffi-tests/{dir}");
    v
}

#[test]
fn c_programs() {
    for src in sources("c", "c") {
        compile_and_run("cc", "-std=c11", &src, &["-pedantic"]);
    }
}

#[test]
fn cpp_programs() {
    for src in sources("cpp", "cpp") {
        compile_and_run("c++", "-std=c++17", &src, &["-pedantic"]);
    }
}

#[test]
fn python_programs() {
    let lib = lib_dir().join("libtarn.so");
    for src in sources("python", "py") {
        if !src
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("test_"))
        {
            continue;
        }
        let mut py = Command::new("python3");
        py.arg(&src)
            .current_dir(root())
            .env("TARN_LIB", &lib)
            .env("PYTHONPATH", root().join("python"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        run(&mut py, &src.display().to_string());
    }
}
