//! `DirtyPages::next_run` (the word-wise scan Diff snapshots use) against a bit-by-bit model.

use proptest::prelude::*;
use squib_snapshot::DirtyPages;

fn runs(bits: &DirtyPages, pages: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some((start, end)) = bits.next_run(from, pages) {
        assert!(
            start >= from && start < end && end <= pages,
            "{start}..{end}"
        );
        out.push((start, end));
        from = end;
    }
    out
}

fn model(words: &[u64], pages: u64) -> Vec<(u64, u64)> {
    let set = |p: u64| {
        usize::try_from(p / 64)
            .ok()
            .and_then(|i| words.get(i))
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for p in (0..pages).filter(|&p| set(p)) {
        match out.last_mut() {
            Some(last) if last.1 == p => last.1 = p + 1,
            _ => out.push((p, p + 1)),
        }
    }
    out
}

#[test]
fn edges() {
    let all = DirtyPages::All;
    assert_eq!(runs(&all, 10), vec![(0, 10)]);
    assert_eq!(runs(&all, 0), vec![]);
    let full = DirtyPages::Bitmap(vec![u64::MAX, u64::MAX]);
    assert_eq!(runs(&full, 128), vec![(0, 128)]);
    assert_eq!(
        runs(&full, 100),
        vec![(0, 100)],
        "bits past the region are ignored"
    );
    let split = DirtyPages::Bitmap(vec![1 << 63, 1, 0, 1 << 5]);
    assert_eq!(runs(&split, 256), vec![(63, 65), (197, 198)]);
    assert_eq!(runs(&DirtyPages::Bitmap(vec![]), 1000), vec![]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn matches_the_bit_by_bit_model(
        words in prop::collection::vec(
            prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()], 0..12),
        pages in 0u64..900,
    ) {
        let bits = DirtyPages::Bitmap(words.clone());
        prop_assert_eq!(runs(&bits, pages), model(&words, pages));
    }
}
