//! `PUT /cpu-config` and `cpu_template` over the wire: the host architecture's schema and
//! Firecracker 1.17's exact texts (recorded from the real binary on x86_64).

mod support;

use std::sync::Arc;

use squib_api::{ServeOptions, TimeoutTable};
use squib_core::CapabilityProfile;
use support::{Conn, controller, kvm_server, start, stub_vmm, unique_socket_path};

const PREFIX: &str = "An error occurred when deserializing the json body of a request: ";

#[tokio::test]
async fn test_should_parse_x86_templates_with_firecracker_texts() {
    let (_c, socket, _seen) = kvm_server().await;
    let mut conn = Conn::open(&socket).await;
    let cases = [
        (
            r#"{"reg_modifiers":[]}"#,
            "unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers` at line 1 column 16.",
        ),
        (
            r#"{"cpuid_modifiers":[{"leaf":"1","subleaf":"0x0","flags":0,"modifiers":[]}]}"#,
            "No supported number system prefix found in value [1]. Make sure to prefix the number with '0x' for hexadecimal numbers or '0b' for binary numbers. at line 1 column 31.",
        ),
        (
            r#"{"kvm_capabilities":["abc"]}"#,
            "Failed to parse string [abc] as a kvm capability - can not convert to numeric: invalid digit found in string at line 1 column 27.",
        ),
    ];
    for (body, text) in cases {
        let r = conn.request("PUT", "/cpu-config", Some(body)).await;
        assert_eq!(
            (r.status, r.fault()),
            (400, format!("{PREFIX}{text}")),
            "{body}"
        );
    }
    let ok = r#"{"kvm_capabilities":["!56"],"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{"register":"ecx","bitmap":"0bxxxxxxxxxxxxxxxxxx0xxxxxxxxxxxxx"}]}],"msr_modifiers":[{"addr":"0x277","bitmap":"0b0"}]}"#;
    assert_eq!(
        conn.request("PUT", "/cpu-config", Some(ok)).await.status,
        204
    );
    // GET /vm/config never shows it (Firecracker reports `cpu-config: null`).
    let v = conn.request("GET", "/vm/config", None).await.json();
    assert_eq!(v["cpu-config"], serde_json::Value::Null);
    // ARM's static template name is unknown on x86_64.
    let r = conn
        .request(
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": "V1N1"}"#),
        )
        .await;
    assert_eq!(
        r.fault(),
        format!(
            "{PREFIX}unknown variant `V1N1`, expected one of `C3`, `T2`, `T2S`, `None`, `T2CL`, `T2A` at line 1 column 61."
        )
    );
    let r = conn
        .request(
            "PATCH",
            "/machine-config",
            Some(r#"{"cpu_template":"T2CL"}"#),
        )
        .await;
    assert_eq!((r.status, r.header("deprecation")), (204, Some("true")));
    let v = conn.request("GET", "/machine-config", None).await.json();
    assert_eq!(v["cpu_template"], "T2CL");
    // A custom template replaces the static one in the single template slot.
    assert_eq!(
        conn.request("PUT", "/cpu-config", Some("{}")).await.status,
        204
    );
    let v = conn.request("GET", "/machine-config", None).await.json();
    assert_eq!(v.get("cpu_template"), None);
}

#[tokio::test]
async fn test_should_parse_aarch64_templates_on_an_arm_profile() {
    let (c, rx) = controller(
        CapabilityProfile::apple_silicon(),
        TimeoutTable::from_spec(),
        8,
    );
    let _seen = stub_vmm(Arc::clone(&c), rx);
    let socket = start(c, ServeOptions::new(unique_socket_path("armtpl"))).await;
    let mut conn = Conn::open(&socket).await;
    let r = conn
        .request("PUT", "/cpu-config", Some(r#"{"cpuid_modifiers":[]}"#))
        .await;
    assert_eq!(
        r.fault(),
        format!(
            "{PREFIX}unknown field `cpuid_modifiers`, expected one of `kvm_capabilities`, `vcpu_features`, `reg_modifiers` at line 1 column 18."
        )
    );
    let ok = r#"{"kvm_capabilities":["171"],"vcpu_features":[{"index":0,"bitmap":"0b11xxxxx"}]}"#;
    assert_eq!(
        conn.request("PUT", "/cpu-config", Some(ok)).await.status,
        204
    );
    let r = conn
        .request("PATCH", "/machine-config", Some(r#"{"cpu_template":"T2"}"#))
        .await;
    assert_eq!(
        r.fault(),
        format!("{PREFIX}unknown variant `T2`, expected `V1N1` or `None` at line 1 column 20.")
    );
}
