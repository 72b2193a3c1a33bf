//! A few thousand seeded fuzz cases in the test suite: every target, from the
//! sample photos and the parity fixtures, reproducible from the seed. The
//! long runs are `scripts/fuzz.sh`.

use std::path::{Path, PathBuf};

use fuzz::{load_seeds, run, Inputs, Report, Target};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/fuzz sits two levels below the workspace root")
        .to_path_buf()
}

fn home() -> PathBuf {
    match std::env::var_os("DARKROOM_HOME") {
        Some(home) if !home.is_empty() => workspace().join(home),
        _ => workspace().join("var"),
    }
}

/// The same seed as every run of the suite: a failure here fails every time,
/// and `darkroom-fuzz --seed 20261130 --case N` replays case N alone.
const SEED: u64 = 20_261_130;
const CASES: u64 = 4000;

#[test]
fn seeded_cases_find_no_failure_in_any_target() {
    let dirs = [
        home().join("samples"),
        workspace().join("crates/imaging/tests/fixtures/parity/inputs"),
    ];
    let seeds = load_seeds(&dirs, 2_000_000).expect("seed photos (run `darkroom models fetch`)");
    assert!(
        seeds.len() >= 8,
        "{} seed photos in {dirs:?}: run `darkroom models fetch` first",
        seeds.len()
    );
    let inputs = Inputs::new(seeds).unwrap();
    let mut report = Report::default();
    run(
        &inputs,
        SEED,
        0..CASES,
        &Target::ALL,
        None,
        &mut report,
        |_| {},
    )
    .unwrap();
    println!("{}", report.summary());
    let failures: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{} case {} (from {}): {}; replay with `darkroom-fuzz --seeds var/samples --seeds crates/imaging/tests/fixtures/parity/inputs --seed {SEED} --case {}`",
                f.target.name(),
                f.case,
                f.seed_photo,
                f.message,
                f.case
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(report.cases, CASES);
    // The mutations must reach both sides of every reader: a fuzzer whose
    // every case is refused at the first byte (or none is) tests nothing.
    for target in Target::ALL {
        let refused: u64 = report
            .refused
            .get(&target)
            .map_or(0, |codes| codes.values().sum());
        let accepted = report.accepted.get(&target).copied().unwrap_or(0);
        if target != Target::Exif {
            assert!(refused > 0, "{}: no case was refused", target.name());
        }
        assert!(accepted > 0, "{}: no case was accepted", target.name());
    }
    // Decoding refuses damaged files with more than one code.
    let decode_codes = report.refused.get(&Target::Decode).map_or(0, |c| c.len());
    assert!(
        decode_codes >= 3,
        "decode refused with only {decode_codes} codes"
    );
}
