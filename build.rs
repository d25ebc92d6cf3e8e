//! Compiles the public protos and the internal worker API (proto/ is the include root), and
//! links libpocketsphinx (SpeechToTextNode's engine, a hand-written FFI in
//! src/pipeline/nodes/pocketsphinx_ffi.rs; Debian's libpocketsphinx-dev and libsphinxbase-dev,
//! which `make deps` installs).
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/remotemedia/v1/common.proto",
        "proto/remotemedia/v1/webrtc_signaling.proto",
        "proto/remotemedia/v1/worker.proto",
    ];
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    link_pocketsphinx();
    Ok(())
}

/// The link flags pkg-config gives for pocketsphinx (its search paths and libraries), or
/// `-lpocketsphinx -lsphinxbase` from the default paths when pkg-config is not installed.
fn link_pocketsphinx() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let flags = Command::new("pkg-config")
        .args(["--libs", "pocketsphinx"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok());
    let Some(flags) = flags else {
        println!("cargo:rustc-link-lib=pocketsphinx");
        println!("cargo:rustc-link-lib=sphinxbase");
        return;
    };
    for flag in flags.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            // sphinxad (audio devices) is listed but not used: no need to link it.
            if lib != "sphinxad" {
                println!("cargo:rustc-link-lib={lib}");
            }
        }
    }
}
