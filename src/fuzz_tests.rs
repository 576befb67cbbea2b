//! Property tests over the manifest parser and validator (issue: hostile
//! input): no input panics, hangs or makes the pipeline misbehave. Three
//! generators: arbitrary bytes, YAML-flavoured text, and random edits of the
//! seed manifests kept in `tests/fixtures/fuzz-seeds/` (valid, anchored and
//! broken ones). They run in CI with every `cargo test`; more cases:
//! `PROPTEST_CASES=200000 cargo test --bin lanectl fuzz_tests`.

#[cfg(test)]
mod property {
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    use crate::{manifest, spec};

    fn seeds() -> Vec<String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-seeds");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("tests/fixtures/fuzz-seeds")
            .map(|e| e.expect("seed").path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("seed text"))
            .collect()
    }

    /// The whole file-to-spec pipeline on one manifest (with the seed defaults).
    fn pipeline(bytes: &[u8]) {
        let dir = Path::new("/nonexistent/lanes.d");
        let defaults =
            manifest::parse_source(&dir.join("_defaults.yaml"), seeds()[1].clone().into_bytes())
                .ok();
        let source = match manifest::parse_source(&dir.join("alpha.yaml"), bytes.to_vec()) {
            Ok(s) => s,
            Err(problems) => {
                assert!(!problems.is_empty());
                let _ = problems.iter().map(ToString::to_string).count();
                return;
            }
        };
        match manifest::load(source, defaults.as_ref()) {
            Ok(loaded) => match spec::resolve("alpha", &loaded, dir) {
                Ok(spec) => {
                    let _ = crate::hash::lane_hash(&spec, "img", None, &[]);
                }
                Err(problems) => assert!(!problems.is_empty()),
            },
            Err(problems) => {
                assert!(!problems.is_empty());
                for p in problems {
                    let _ = p.to_string();
                }
            }
        }
    }

    /// One edit: position (as a fraction), kind, character.
    fn mutate(seed: &str, edits: &[(prop::sample::Index, u8, char)]) -> String {
        let mut chars: Vec<char> = seed.chars().collect();
        for (at, kind, c) in edits {
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, *c),
                1 if i < chars.len() => {
                    chars.remove(i);
                }
                2 if i < chars.len() => chars[i] = *c,
                _ => {
                    // Duplicate a run: repeated keys, deeper nesting, longer lists.
                    let end = (i + 12).min(chars.len());
                    let run: Vec<char> = chars[i.min(end)..end].to_vec();
                    chars.splice(i.min(chars.len())..i.min(chars.len()), run);
                }
            }
        }
        chars.into_iter().collect()
    }

    /// 1000 per generator in CI; `PROPTEST_CASES` for a longer run.
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1000)
    }

    const YAMLISH: &str = "[-a-z0-9_:{}\\[\\],&*!|>'\"#?%@~ \n\t.]{0,400}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            pipeline(&bytes);
        }

        #[test]
        fn yaml_flavoured_text_never_panics(text in YAMLISH) {
            pipeline(text.as_bytes());
        }

        #[test]
        fn edited_seed_manifests_never_panic(
            seed in 0usize..5,
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), 0u8..4, prop::sample::select(vec![':', '-', '[', ']', '{', '}', '&', '*', '\n', ' ', '"', '\'', '#', '!', 'x', '0', '|', '>', '\t', '?'])),
                1..8,
            ),
        ) {
            let seeds = seeds();
            let text = mutate(&seeds[seed % seeds.len()], &edits);
            pipeline(text.as_bytes());
        }
    }

    #[test]
    fn every_seed_goes_through_the_pipeline() {
        for seed in seeds() {
            pipeline(seed.as_bytes());
        }
    }
}
