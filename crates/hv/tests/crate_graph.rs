//! The hypervisor-neutral crates must not depend on KVM crates (only `squib-kvm` may).

use std::path::Path;

fn manifest(krate: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn test_neutral_crates_do_not_name_kvm_crates() {
    for krate in ["hv", "arch", "x86emu"] {
        let text = manifest(krate);
        for banned in ["kvm-ioctls", "kvm-bindings", "squib-kvm"] {
            assert!(
                !text.contains(banned),
                "crates/{krate}/Cargo.toml must not depend on {banned}"
            );
        }
    }
}

#[test]
fn test_kvm_crate_is_the_kvm_backend() {
    let text = manifest("kvm");
    assert!(text.contains("kvm-ioctls") && text.contains("squib-hv"));
}
