//! Builds linen's XDP programs (`bpf/*.bpf.c`) with clang into `$OUT_DIR`, where
//! `src/io/xsk/program.rs` embeds them with `include_bytes!`.
//!
//! The object is built the same way on every machine: fixed flags, no host-dependent defines, and
//! the source directory mapped to `.` in the debug info (BTF line info carries file names), so the
//! bytes depend only on the source and the clang version. Set `CLANG` to use another compiler.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["linen_xdp"];

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");

    // The kernel UAPI headers' <asm/...> live in the multiarch directory on Debian.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("linen's BPF build does not know the multiarch include dir for {other}"),
    };

    for name in PROGRAMS {
        let src = manifest.join("bpf").join(format!("{name}.bpf.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{name}.bpf.o"));
        compile(&clang, &manifest, multiarch, &src, &obj);
    }
}

fn compile(clang: &str, manifest: &Path, multiarch: &str, src: &Path, obj: &Path) {
    let status = Command::new(clang)
        .current_dir(manifest)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg(format!("-fdebug-prefix-map={}=.", manifest.display()))
        .arg("-fdebug-compilation-dir=.")
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the XDP program {} failed ({s}); see clang's messages above",
            src.display()
        ),
        Err(e) => panic!(
            "cannot run `{clang}` to build the XDP program {} ({e}): linen needs clang with the \
             BPF target and the kernel/libbpf headers (Debian: apt-get install clang llvm \
             libbpf-dev linux-libc-dev), or set CLANG to a clang binary",
            src.display()
        ),
    }
}
