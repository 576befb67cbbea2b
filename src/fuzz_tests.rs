//! Property tests over the manifest parser and validator (issue: hostile
//! input): no input panics, hangs or makes the pipeline misbehave. Three
//! generators: arbitrary bytes (alone or spliced into a seed), YAML-flavoured
//! text (free, or lines of manifest keys), and random edits of the seed
//! manifests kept in `tests/fixtures/fuzz-seeds/` (valid, anchored and broken
//! ones). Each case is merged over the `defaults.yaml` seed and resolved in a
//! scratch tree that holds the sources the seeds name, and each generator must
//! bring a share of its cases to a valid spec, so that none tests only the
//! parser's error paths. They run in CI with every `cargo test`; more cases:
//! `PROPTEST_CASES=200000 cargo test --bin lanectl fuzz_tests`.

#[cfg(test)]
mod property {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use proptest::test_runner::TestRunner;

    use crate::{lanespec, manifest};

    /// The seed manifests by file name.
    fn seeds() -> Vec<(String, String)> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-seeds");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("tests/fixtures/fuzz-seeds")
            .map(|e| e.expect("seed").path())
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                let name = p.file_name().expect("seed name").to_string_lossy();
                (
                    name.into_owned(),
                    std::fs::read_to_string(p).expect("seed text"),
                )
            })
            .collect()
    }

    /// The seed named `name`.
    fn seed(name: &str) -> String {
        seeds()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no seed {name} in tests/fixtures/fuzz-seeds"))
            .1
    }

    /// A lanes directory in a scratch tree that holds every source the seeds
    /// name, so that a case can get past the resolver's "does not exist".
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            let tree = tempfile::tempdir().expect("a scratch tree");
            let root = tree.path();
            for dir in [
                "lanes.d",
                "target/lane-worker",
                "examples/worktrees/alpha",
                "examples/codex/alpha",
                "worktrees/alpha",
                "codex/alpha",
            ] {
                std::fs::create_dir_all(root.join(dir)).expect("a scratch dir");
            }
            std::fs::write(root.join("target/lane-worker/lane-worker"), "worker")
                .expect("a scratch file");
            Tree(tree)
        }

        fn lanes(&self) -> PathBuf {
            self.0.path().join("lanes.d")
        }
    }

    /// The `_defaults.yaml` every case is merged over.
    fn defaults(lanes: &Path) -> manifest::Source {
        let text = seed("defaults.yaml").into_bytes();
        manifest::parse_source(&lanes.join("_defaults.yaml"), text)
            .expect("the defaults seed parses")
    }

    /// How far a manifest got through the pipeline.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Outcome {
        Unparsed,
        Unloaded,
        Unresolved,
        Valid,
    }

    /// The whole file-to-spec pipeline on one manifest of `lanes`, merged over
    /// the defaults seed.
    fn pipeline(lanes: &Path, bytes: &[u8]) -> Outcome {
        let defaults = defaults(lanes);
        let source = match manifest::parse_source(&lanes.join("alpha.yaml"), bytes.to_vec()) {
            Ok(s) => s,
            Err(problems) => {
                assert!(!problems.is_empty());
                let _ = problems.iter().map(ToString::to_string).count();
                return Outcome::Unparsed;
            }
        };
        match manifest::load(source, Some(&defaults)) {
            Ok(loaded) => match lanespec::resolve("alpha", &loaded, lanes) {
                Ok(spec) => {
                    let _ = crate::hash::lane_hash(&spec, "img", None, &[]);
                    Outcome::Valid
                }
                Err(problems) => {
                    assert!(!problems.is_empty());
                    Outcome::Unresolved
                }
            },
            Err(problems) => {
                assert!(!problems.is_empty());
                for p in problems {
                    let _ = p.to_string();
                }
                Outcome::Unloaded
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

    /// Valid specs a generator must reach, in percent of its cases: a generator
    /// that only makes garbage never tests the resolver, the cross-field rules
    /// or the lane hash.
    const MIN_VALID_PERCENT: usize = 5;

    /// Runs [`cases`] cases of `strategy` through the pipeline, as `proptest!`
    /// would (a panic fails the test, with the shrunk input), and checks that at
    /// least [`MIN_VALID_PERCENT`] of them end as a valid spec (of 200 cases or more).
    fn fuzz<S: Strategy>(name: &str, strategy: S, text: impl Fn(&S::Value) -> Vec<u8>) {
        let tree = Tree::new();
        let config = ProptestConfig {
            cases: cases(),
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let counts = RefCell::new(BTreeMap::<Outcome, usize>::new());
        let result = TestRunner::new(config).run(&strategy, |value| {
            let outcome = pipeline(&tree.lanes(), &text(&value));
            *counts.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        });
        if let Err(err) = result {
            panic!("{name}: {err}");
        }
        let counts = counts.into_inner();
        let total: usize = counts.values().sum();
        let valid = counts.get(&Outcome::Valid).copied().unwrap_or(0);
        eprintln!("{name}: {counts:?}");
        // Below a few hundred cases (a short `PROPTEST_CASES`) the share is noise.
        assert!(
            total < 200 || valid * 100 >= total * MIN_VALID_PERCENT,
            "{name}: {valid} of {total} cases reached a valid spec, want at least \
             {MIN_VALID_PERCENT}%: {counts:?}"
        );
    }

    /// Which seed, and up to three bytes put in or over it.
    type ByteEdits = (usize, Vec<(prop::sample::Index, u8, bool)>);

    fn splice_bytes(seed: &str, (_, edits): &ByteEdits) -> Vec<u8> {
        let mut bytes = seed.as_bytes().to_vec();
        for (at, byte, insert) in edits {
            let i = at.index(bytes.len() + 1);
            if *insert || i == bytes.len() {
                bytes.insert(i, *byte);
            } else {
                bytes[i] = *byte;
            }
        }
        bytes
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seeds = seeds();
        let edits = (
            0..seeds.len(),
            proptest::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop_oneof![any::<u8>(), b' '..=b'~'],
                    any::<bool>(),
                ),
                1..4,
            ),
        );
        let bytes = prop_oneof![
            1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Err),
            3 => edits.prop_map(Ok),
        ];
        fuzz("arbitrary bytes", bytes, |case| match case {
            Err(bytes) => bytes.clone(),
            Ok(edits) => splice_bytes(&seeds[edits.0].1, edits),
        });
    }

    /// Values that some manifest key takes, and some that none does.
    const VALUES: &[&str] = &[
        "x",
        "root",
        "running",
        "stopped",
        "10s",
        "0s",
        "[a, b]",
        "\"serve --port 1\"",
        "{A: '1', B: two}",
        "/workspace",
        "0",
        "''",
        "~",
        "[]",
        "{}",
        "[{container: 80}]",
        "[{container: 80, host_port: 0}]",
        "{port: 80, path: /h}",
        "{memory: 64m, cpus: 0.5, pids: 10}",
        "[{source: ../worktrees/alpha, target: /w}]",
        "{source: ../codex/alpha, target: /root/.codex}",
        "-1",
        "[[x]]",
        "&a x",
        "*a",
        "|\n  x",
    ];
    const KEYS: &[&str] = &[
        "image",
        "container_name",
        "user",
        "entrypoint",
        "command",
        "workdir",
        "env",
        "labels",
        "mounts",
        "ports",
        "codex",
        "probe",
        "resources",
        "stop_timeout",
        "state",
        "bogus",
    ];

    #[test]
    fn yaml_flavoured_text_never_panics() {
        let value = prop_oneof![
            3 => prop::sample::select(VALUES).prop_map(str::to_owned),
            1 => "[-a-z0-9_:{}\\[\\],&*!|>'\"#?%@~ .]{0,20}",
        ];
        let lines = proptest::collection::vec((prop::sample::select(KEYS), value), 0..5).prop_map(
            |lines| {
                lines
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect::<String>()
            },
        );
        let text = prop_oneof![YAMLISH.prop_map(|t| t.to_string()), lines];
        fuzz("yaml-flavoured text", text, |t: &String| {
            t.clone().into_bytes()
        });
    }

    #[test]
    fn edited_seed_manifests_never_panic() {
        let seeds = seeds();
        let edits = proptest::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u8..4,
                prop::sample::select(vec![
                    ':', '-', '[', ']', '{', '}', '&', '*', '\n', ' ', '"', '\'', '#', '!', 'x',
                    '0', '|', '>', '\t', '?',
                ]),
            ),
            1..8,
        );
        fuzz("edited seeds", (0..seeds.len(), edits), |(seed, edits)| {
            mutate(&seeds[*seed].1, edits).into_bytes()
        });
    }

    #[test]
    fn cases_are_merged_over_the_defaults_seed() {
        let tree = Tree::new();
        let lanes = tree.lanes();
        let alpha = manifest::parse_source(&lanes.join("alpha.yaml"), seed("alpha.yaml").into())
            .expect("the alpha seed parses");
        let loaded = manifest::load(alpha, Some(&defaults(&lanes))).expect("alpha loads");
        let spec = lanespec::resolve("alpha", &loaded, &lanes).expect("alpha resolves");
        assert_eq!(spec.image, "localhost/lane-worker:dev");
        assert_eq!(spec.workdir.as_deref(), Some("/workspace"));
    }

    #[test]
    fn every_seed_goes_through_the_pipeline() {
        let tree = Tree::new();
        let outcomes: Vec<_> = seeds()
            .into_iter()
            .map(|(name, text)| (name, pipeline(&tree.lanes(), text.as_bytes())))
            .collect();
        let valid = |n: &str| outcomes.contains(&(n.into(), Outcome::Valid));
        assert!(
            valid("alpha.yaml") && valid("full.yaml") && valid("defaults.yaml"),
            "{outcomes:?}"
        );
        assert!(!valid("broken.yaml"), "{outcomes:?}");
    }
}
