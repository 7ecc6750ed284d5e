//! Compiles `proto/spool/v1/*.proto` with the vendored `protoc` (a fresh checkout builds without a system package)
//! and writes the file descriptor set that the server's reflection service publishes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // tonic-prost-build runs whatever `protoc` PROTOC names; the build script is single-threaded, so setting it is safe.
    std::env::set_var("PROTOC", protoc);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [root.join("spool/v1/job.proto"), root.join("spool/v1/spool.proto")];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("spool_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_protos(&files, &[root])?;
    Ok(())
}
