//! Template parsing: every error path with Firecracker 1.17's text (recorded from the real
//! binary: `PUT /cpu-config` answers `An error occurred when deserializing the json body of a
//! request: <text>.`), bitmap rules, proptests.

use proptest::prelude::*;
use squib_core::GuestArch;

use super::*;

fn x86(json: &str) -> Result<CpuConfig, String> {
    CpuConfig::from_json(json.as_bytes(), GuestArch::X86_64).map_err(|e| e.to_string())
}

fn arm(json: &str) -> Result<CpuConfig, String> {
    CpuConfig::from_json(json.as_bytes(), GuestArch::Aarch64).map_err(|e| e.to_string())
}

fn leaf_with(leaf: &str, subleaf: &str, rest: &str) -> String {
    format!(r#"{{"cpuid_modifiers":[{{"leaf":"{leaf}","subleaf":"{subleaf}",{rest}}}]}}"#)
}

fn reg_with(register: &str, bitmap: &str) -> String {
    format!(
        r#"{{"cpuid_modifiers":[{{"leaf":"0x1","subleaf":"0x0","flags":0,"modifiers":[{{"register":"{register}","bitmap":"{bitmap}"}}]}}]}}"#
    )
}

#[test]
fn test_should_accept_empty_templates_like_firecracker() {
    for body in [
        "{}",
        "[]",
        r#"{"kvm_capabilities":[],"cpuid_modifiers":[],"msr_modifiers":[]}"#,
    ] {
        assert_eq!(x86(body).unwrap(), CpuConfig::default(), "{body}");
    }
    assert_eq!(arm("{}").unwrap(), CpuConfig::default());
}

#[test]
fn test_should_parse_the_documented_x86_example() {
    let cfg = x86(
        r#"{"kvm_capabilities":["!56","121"],
            "cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0,
              "modifiers":[{"register":"eax","bitmap":"0bxxxx000000000011xx00011011110010"}]}],
            "msr_modifiers":[{"addr":"0x10a","bitmap":"0b0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.kvm_capabilities,
        vec![KvmCapability::Remove(56), KvmCapability::Add(121)]
    );
    let leaf = &cfg.cpuid_modifiers[0];
    assert_eq!((leaf.leaf, leaf.subleaf, leaf.flags), (1, 0, 0));
    let bm = leaf.modifiers[0].bitmap;
    assert_eq!(leaf.modifiers[0].register, CpuidRegister::Eax);
    assert_eq!(bm.filter, 0b0000_1111_1111_1111_0011_1111_1111_1111);
    assert_eq!(bm.value, 0b0000_0000_0000_0011_0000_0110_1111_0010);
    assert_eq!(cfg.msr_modifiers[0].addr, 0x10a);
    assert_eq!(cfg.msr_modifiers[0].bitmap.filter, u128::from(u64::MAX));
    assert_eq!(cfg.msr_modifiers[0].bitmap.value, 0);
}

#[test]
fn test_should_accept_unknown_nested_keys_and_loose_numbers_like_firecracker() {
    // Nested objects have no `deny_unknown_fields` in Firecracker.
    assert!(
        x86(&leaf_with(
            "0x1",
            "0x0",
            r#""flags":0,"modifiers":[],"extra":1"#
        ))
        .is_ok()
    );
    assert!(x86(r#"{"msr_modifiers":[{"addr":"0x10a","bitmap":"0b1","y":2}]}"#).is_ok());
    // `from_str_radix` and `u32::from_str` accept a leading `+`.
    assert_eq!(
        x86(&leaf_with("0x+1", "0b0", r#""flags":0,"modifiers":[]"#))
            .unwrap()
            .cpuid_modifiers[0]
            .leaf,
        1
    );
    assert_eq!(
        x86(r#"{"kvm_capabilities":["+5"]}"#)
            .unwrap()
            .kvm_capabilities,
        vec![KvmCapability::Add(5)]
    );
}

#[test]
fn test_should_reject_foreign_architecture_fields_with_firecracker_text() {
    assert_eq!(
        x86(r#"{"reg_modifiers":[]}"#).unwrap_err(),
        "unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers` at line 1 column 16"
    );
    assert_eq!(
        x86(r#"{"vcpu_features":[]}"#).unwrap_err(),
        "unknown field `vcpu_features`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers` at line 1 column 16"
    );
    assert_eq!(
        x86(r#"{"bogus":1}"#).unwrap_err(),
        "unknown field `bogus`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers` at line 1 column 8"
    );
    assert_eq!(
        arm(r#"{"cpuid_modifiers":[]}"#).unwrap_err(),
        "unknown field `cpuid_modifiers`, expected one of `kvm_capabilities`, `vcpu_features`, `reg_modifiers` at line 1 column 18"
    );
}

#[test]
fn test_should_reject_bad_numbers_with_firecracker_text() {
    let prefix = |v: &str, col: u32| {
        format!(
            "No supported number system prefix found in value [{v}]. Make sure to prefix the number with '0x' for hexadecimal numbers or '0b' for binary numbers. at line 1 column {col}"
        )
    };
    let rest = r#""flags":0,"modifiers":[]"#;
    assert_eq!(
        x86(&leaf_with("1", "0x0", rest)).unwrap_err(),
        prefix("1", 31)
    );
    assert_eq!(
        x86(&leaf_with("0x1", "0", rest)).unwrap_err(),
        prefix("0", 47)
    );
    assert_eq!(
        x86(&leaf_with("0X1", "0x0", rest)).unwrap_err(),
        prefix("0X1", 33)
    );
    let number = |v: &str, kind: &str, col: u32| {
        format!(
            "Failed to parse string [{v}] as a number for CPU template - ParseIntError {{ kind: {kind} }} at line 1 column {col}"
        )
    };
    assert_eq!(
        x86(&leaf_with("0xzz", "0x0", rest)).unwrap_err(),
        number("0xzz", "InvalidDigit", 34)
    );
    assert_eq!(
        x86(&leaf_with("0x100000000", "0x0", rest)).unwrap_err(),
        number("0x100000000", "PosOverflow", 41)
    );
    assert_eq!(
        x86(&leaf_with("0b", "0x0", rest)).unwrap_err(),
        number("0b", "Empty", 32)
    );
    assert_eq!(
        x86(&leaf_with("0x", "0x0", rest)).unwrap_err(),
        number("0x", "Empty", 32)
    );
    assert_eq!(
        x86(&leaf_with("0b2", "0x0", rest)).unwrap_err(),
        number("0b2", "InvalidDigit", 33)
    );
    assert_eq!(
        x86(&leaf_with("0x1_0", "0x0", rest)).unwrap_err(),
        number("0x1_0", "InvalidDigit", 35)
    );
    assert_eq!(
        x86(r#"{"msr_modifiers":[{"addr":"0x100000000","bitmap":"0b1"}]}"#).unwrap_err(),
        number("0x100000000", "PosOverflow", 39)
    );
    assert_eq!(
        x86(r#"{"msr_modifiers":[{"addr":"266","bitmap":"0b1"}]}"#).unwrap_err(),
        prefix("266", 31)
    );
    assert_eq!(
        x86(r#"{"cpuid_modifiers":[{"leaf":1,"subleaf":"0x0","flags":0,"modifiers":[]}]}"#)
            .unwrap_err(),
        "invalid type: integer `1`, expected a string at line 1 column 29"
    );
}

#[test]
fn test_should_reject_bad_flags_and_missing_fields_with_serde_text() {
    assert_eq!(
        x86(&leaf_with("0x1", "0x0", r#""flags":"0","modifiers":[]"#)).unwrap_err(),
        "invalid type: string \"0\", expected u32 at line 1 column 61"
    );
    assert_eq!(
        x86(&leaf_with("0x1", "0x0", r#""flags":-1,"modifiers":[]"#)).unwrap_err(),
        "invalid value: integer `-1`, expected u32 at line 1 column 60"
    );
    assert_eq!(
        x86(&leaf_with(
            "0x1",
            "0x0",
            r#""flags":4294967296,"modifiers":[]"#
        ))
        .unwrap_err(),
        "invalid value: integer `4294967296`, expected u32 at line 1 column 68"
    );
    assert_eq!(
        x86(r#"{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","modifiers":[]}]}"#).unwrap_err(),
        "missing field `flags` at line 1 column 65"
    );
    assert_eq!(
        x86(r#"{"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x0","flags":0}]}"#).unwrap_err(),
        "missing field `modifiers` at line 1 column 60"
    );
    assert_eq!(
        x86(r#"{"msr_modifiers":[{"addr":"0x10a"}]}"#).unwrap_err(),
        "missing field `bitmap` at line 1 column 34"
    );
    assert_eq!(
        x86(r#"{"kvm_capabilities":"5"}"#).unwrap_err(),
        "invalid type: string \"5\", expected a sequence at line 1 column 23"
    );
    assert_eq!(
        x86(r#"{"kvm_capabilities":[5]}"#).unwrap_err(),
        "invalid type: integer `5`, expected a string at line 1 column 22"
    );
    assert_eq!(
        x86("nonsense").unwrap_err(),
        "expected ident at line 1 column 2"
    );
}

#[test]
fn test_should_reject_bad_registers_with_firecracker_text() {
    for name in ["ekx", "EAX", "", "eax "] {
        assert_eq!(
            x86(&reg_with(name, "0b1")).unwrap_err(),
            format!(
                "Invalid CPUID register. Must be one of [eax, ebx, ecx, edx] at line 1 column {}",
                87 + name.len()
            ),
            "{name:?}"
        );
    }
}

#[test]
fn test_should_reject_bad_bitmaps_with_firecracker_text() {
    assert_eq!(
        x86(&reg_with("eax", "0b102")).unwrap_err(),
        "Failed to parse string [0b102] as a bitmap - unknown character: 50 at line 1 column 108"
    );
    // Read from the right: the last UTF-8 byte of `é` (0xa9) is the first bad one.
    assert_eq!(
        x86(&reg_with("eax", "0b1x\u{e9}1")).unwrap_err(),
        "Failed to parse string [0b1x\u{e9}1] as a bitmap - unknown character: 169 at line 1 column 110"
    );
    let ones = "1".repeat(32);
    assert_eq!(
        x86(&reg_with("eax", &format!("0b_{ones}"))).unwrap_err(),
        format!(
            "Failed to parse string [0b_{ones}] as a bitmap - string is too long at line 1 column 138"
        )
    );
    assert_eq!(
        x86(&reg_with("eax", &format!("0b1{ones}"))).unwrap_err(),
        format!(
            "Failed to parse string [0b1{ones}] as a bitmap - string is too long at line 1 column 138"
        )
    );
    let long64 = "1".repeat(65);
    assert!(
        x86(&format!(
            r#"{{"msr_modifiers":[{{"addr":"0x10a","bitmap":"0b{long64}"}}]}}"#
        ))
        .unwrap_err()
        .starts_with(&format!(
            "Failed to parse string [0b{long64}] as a bitmap - string is too long"
        ))
    );
    // Accepted: a trailing `_` after exactly 32 bits, no prefix, empty.
    assert!(x86(&reg_with("eax", &format!("0b{ones}_"))).is_ok());
    let no_prefix = x86(&reg_with("eax", "101")).unwrap();
    assert_eq!(
        no_prefix.cpuid_modifiers[0].modifiers[0].bitmap.filter,
        0b111
    );
    for empty in ["", "0b"] {
        let cfg = x86(&reg_with("eax", empty)).unwrap();
        assert_eq!(
            cfg.cpuid_modifiers[0].modifiers[0].bitmap.filter, 0,
            "{empty:?}"
        );
    }
}

#[test]
fn test_should_reject_bad_capabilities_with_firecracker_text() {
    let cases = [
        ("abc", "invalid digit found in string", 27),
        ("!abc", "invalid digit found in string", 28),
        ("!", "cannot parse integer from empty string", 25),
        ("-1", "invalid digit found in string", 26),
        (" 5", "invalid digit found in string", 26),
    ];
    for (cap, why, col) in cases {
        assert_eq!(
            x86(&format!(r#"{{"kvm_capabilities":["{cap}"]}}"#)).unwrap_err(),
            format!(
                "Failed to parse string [{cap}] as a kvm capability - can not convert to numeric: {why} at line 1 column {col}"
            )
        );
    }
}

#[test]
fn test_should_reject_duplicate_top_level_fields() {
    assert!(
        x86(r#"{"cpuid_modifiers":[],"cpuid_modifiers":[]}"#)
            .unwrap_err()
            .starts_with("duplicate field `cpuid_modifiers`")
    );
}

#[test]
fn test_should_parse_and_validate_aarch64_templates() {
    let cfg = arm(
        r#"{"kvm_capabilities":["171","172"],"vcpu_features":[{"index":0,"bitmap":"0b11xxxxx"}],
            "reg_modifiers":[{"addr":"0x603000000013c020","bitmap":"0bxxxxxxxxxxxx0000xxxxxxxxxxxx0000xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}]}"#,
    )
    .unwrap();
    assert_eq!(cfg.reg_modifiers[0].addr, 0x6030_0000_0013_c020);
    assert_eq!(cfg.vcpu_features[0].bitmap.value, 0b110_0000);
    // A 64-bit register (size field 3) cannot take a 65-bit bitmap.
    let wide = format!("1{}", "x".repeat(64));
    assert_eq!(
        arm(&format!(
            r#"{{"reg_modifiers":[{{"addr":"0x603000000013c020","bitmap":"0b{wide}"}}]}}"#
        ))
        .unwrap_err(),
        "Invalid size of bitmap for register 0x603000000013c020, should be <= 64 bits"
    );
    assert_eq!(
        arm(r#"{"reg_modifiers":[{"addr":"0x6070000000000000","bitmap":"0b1"}]}"#).unwrap_err(),
        "Invalid aarch64 register address: 0x6070000000000000 - Only 32, 64 and 128 bit wide registers are supported"
    );
}

#[test]
fn test_should_bound_lists() {
    let caps = vec!["1"; MAX_TEMPLATE_ENTRIES + 1];
    let json = serde_json::json!({ "kvm_capabilities": caps }).to_string();
    assert_eq!(
        x86(&json).unwrap_err(),
        format!(
            "Invalid kvm_capabilities: exceeds {MAX_TEMPLATE_ENTRIES} entries (got {})",
            MAX_TEMPLATE_ENTRIES + 1
        )
    );
}

#[test]
fn test_should_parse_inline_values_without_positions() {
    let v = serde_json::json!({"msr_modifiers":[{"addr":"0x277","bitmap":"0b1"}]});
    let cfg = CpuConfig::from_value(v, GuestArch::X86_64).unwrap();
    assert_eq!(cfg.msr_modifiers[0].addr, 0x277);
    let bad = serde_json::json!({"reg_modifiers":[]});
    assert_eq!(
        CpuConfig::from_value(bad, GuestArch::X86_64)
            .unwrap_err()
            .to_string(),
        "unknown field `reg_modifiers`, expected one of `kvm_capabilities`, `cpuid_modifiers`, `msr_modifiers`"
    );
}

#[test]
fn test_should_serialize_back_to_firecracker_string_forms() {
    let cfg = x86(
        r#"{"kvm_capabilities":["!7"],"cpuid_modifiers":[{"leaf":"0x1","subleaf":"0x2","flags":1,
            "modifiers":[{"register":"eax","bitmap":"0b10x"}]}],
            "msr_modifiers":[{"addr":"0x10a","bitmap":"0b1"}]}"#,
    )
    .unwrap();
    let v = serde_json::to_value(&cfg).unwrap();
    assert_eq!(v["kvm_capabilities"][0], "!7");
    assert_eq!(v["cpuid_modifiers"][0]["leaf"], "0x1");
    assert_eq!(v["cpuid_modifiers"][0]["subleaf"], "0x2");
    assert_eq!(v["cpuid_modifiers"][0]["modifiers"][0]["register"], "eax");
    let bitmap = v["cpuid_modifiers"][0]["modifiers"][0]["bitmap"]
        .as_str()
        .unwrap();
    assert_eq!(bitmap, format!("0b{}10x", "x".repeat(29)));
    assert_eq!(v["msr_modifiers"][0]["addr"], "0x10a");
    assert_eq!(v["msr_modifiers"][0]["bitmap"].as_str().unwrap().len(), 66);
    // And it parses back to the same template.
    let again = CpuConfig::from_value(
        serde_json::json!({
            "kvm_capabilities": v["kvm_capabilities"],
            "cpuid_modifiers": v["cpuid_modifiers"],
            "msr_modifiers": v["msr_modifiers"],
        }),
        GuestArch::X86_64,
    )
    .unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn test_bitmap_apply_sets_clears_and_keeps() {
    let bm = Bitmap::parse("0b1x0", 32).unwrap();
    assert_eq!((bm.filter, bm.value), (0b101, 0b100));
    assert_eq!(bm.apply(0b000), 0b100);
    assert_eq!(bm.apply(0b011), 0b110);
    assert_eq!(bm.apply(0xffff_fff8), 0xffff_fffc);
    let new = Bitmap::new(8, 0x1ff, 0xfff);
    assert_eq!((new.filter, new.value), (0xff, 0xff));
}

fn bitmap_chars() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('0'), Just('1'), Just('x'), Just('_')],
        0..140,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn prop_bitmap_parser_never_panics(s in ".{0,200}", width in 0u32..200) {
        let _ = Bitmap::parse(&s, width);
        let _ = parse_template_u32(&s);
        let _ = parse_template_u64(&s);
        let _ = KvmCapability::parse(&s);
        let _ = CpuidRegister::parse(&s);
    }

    #[test]
    fn prop_bitmap_counts_bits_and_roundtrips(s in bitmap_chars(), width in prop_oneof![Just(32u32), Just(64), Just(128)]) {
        let bits = s.chars().filter(|&c| c != '_').count();
        match Bitmap::parse(&format!("0b{s}"), width) {
            Ok(bm) => {
                prop_assert!(bits <= width as usize);
                prop_assert_eq!(bm.value & !bm.filter, 0);
                let text = serde_json::to_value(bm).unwrap();
                let again = Bitmap::parse(text.as_str().unwrap(), width).unwrap();
                prop_assert_eq!(again, bm);
            }
            Err(e) => {
                prop_assert!(e.contains("string is too long"), "{}", e);
                prop_assert!(bits >= width as usize);
            }
        }
    }

    #[test]
    fn prop_bitmap_apply_touches_only_filtered_bits(s in bitmap_chars(), current in any::<u128>()) {
        if let Ok(bm) = Bitmap::parse(&s, 128) {
            let out = bm.apply(current);
            prop_assert_eq!(out & !bm.filter, current & !bm.filter);
            prop_assert_eq!(out & bm.filter, bm.value);
        }
    }

    #[test]
    fn prop_template_parser_never_panics(body in ".{0,300}") {
        let _ = CpuConfig::from_json(body.as_bytes(), GuestArch::X86_64);
        let _ = CpuConfig::from_json(body.as_bytes(), GuestArch::Aarch64);
    }

    #[test]
    fn prop_numbers_roundtrip_in_hex_and_binary(n in any::<u32>()) {
        prop_assert_eq!(parse_template_u32(&format!("0x{n:x}")).unwrap(), n);
        prop_assert_eq!(parse_template_u32(&format!("0b{n:b}")).unwrap(), n);
        prop_assert!(parse_template_u32(&n.to_string()).unwrap_err().starts_with("No supported number system prefix"));
    }
}
