//! Compiles the public protos and the internal worker API (proto/ is the include root).
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
    Ok(())
}
