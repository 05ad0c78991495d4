//! The parser on everyday captions (tests/captions.txt: 208 prompts in the style of image
//! captions, none of the probe's world): it builds a valid graph for each, and on a
//! hand-labelled subset (every seventh caption) it finds the entities a reader would name
//! and the spatial relations between them.

use lina_csg::parse::parse;
use lina_csg::{Class, Predicate};

const CAPTIONS: &str = include_str!("captions.txt");

#[test]
fn every_caption_gives_a_valid_graph_with_its_entities() {
    let captions: Vec<&str> = CAPTIONS.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(captions.len() >= 200, "{} captions", captions.len());
    for caption in captions {
        let csg = parse(caption).unwrap_or_else(|e| panic!("{caption}: {e}"));
        csg.validate().unwrap();
        assert!(!csg.nodes.is_empty(), "{caption}: no node");
        for node in &csg.nodes {
            assert!(!node.noun().is_empty(), "{caption}: {node:?}");
            assert_eq!(
                node.name.is_some(),
                node.class == Class::Thing,
                "{caption}: {node:?}"
            );
        }
    }
}

/// A spatial relation by its nouns: (subject, predicate, object).
type Labelled = (&'static str, Predicate, &'static str);

/// Every seventh caption of captions.txt, labelled by hand: the entities (singular nouns)
/// and the spatial relations a reader would give it.
const LABELLED: &[(&str, &[&str], &[Labelled])] = &[
    (
        "a cat sleeping on a sofa",
        &["cat", "sofa"],
        &[("cat", Predicate::On, "sofa")],
    ),
    (
        "a bowl of fruit on a kitchen counter",
        &["bowl", "fruit", "counter"],
        &[("bowl", Predicate::On, "counter")],
    ),
    (
        "an airplane flying over the mountains",
        &["airplane", "mountain"],
        &[("airplane", Predicate::Above, "mountain")],
    ),
    (
        "a living room with a couch and a television",
        &["room", "couch", "television"],
        &[
            ("couch", Predicate::In, "room"),
            ("television", Predicate::In, "room"),
        ],
    ),
    (
        "a bear in the woods",
        &["bear", "wood"],
        &[("bear", Predicate::In, "wood")],
    ),
    (
        "a man skiing down a snowy slope",
        &["man", "slope"],
        &[("man", Predicate::On, "slope")],
    ),
    (
        "a truck on the highway",
        &["truck", "highway"],
        &[("truck", Predicate::On, "highway")],
    ),
    (
        "a chef preparing food in a restaurant",
        &["chef", "food", "restaurant"],
        &[("chef", Predicate::In, "restaurant")],
    ),
    (
        "a pile of books on the floor",
        &["pile", "book", "floor"],
        &[("pile", Predicate::On, "floor")],
    ),
    (
        "a donut on a napkin",
        &["donut", "napkin"],
        &[("donut", Predicate::On, "napkin")],
    ),
    ("a young woman with long hair", &["woman", "hair"], &[]),
    (
        "a firefighter near a fire truck",
        &["firefighter", "truck"],
        &[("firefighter", Predicate::CloseTo, "truck")],
    ),
    (
        "a cat on a keyboard",
        &["cat", "keyboard"],
        &[("cat", Predicate::On, "keyboard")],
    ),
    (
        "a squirrel on a fence",
        &["squirrel", "fence"],
        &[("squirrel", Predicate::On, "fence")],
    ),
    (
        "a turtle on the sand",
        &["turtle", "sand"],
        &[("turtle", Predicate::On, "sand")],
    ),
    (
        "a snake in the grass",
        &["snake", "grass"],
        &[("snake", Predicate::In, "grass")],
    ),
    (
        "a windmill in a field of tulips",
        &["windmill", "field", "tulip"],
        &[("windmill", Predicate::In, "field")],
    ),
    (
        "a mountain covered in snow",
        &["mountain", "snow"],
        &[("snow", Predicate::On, "mountain")],
    ),
    (
        "a street at night with neon lights",
        &["street", "light"],
        &[],
    ),
    (
        "a swimming pool behind a house",
        &["pool", "house"],
        &[("pool", Predicate::Behind, "house")],
    ),
    (
        "a bookshelf full of books",
        &["bookshelf", "book"],
        &[("book", Predicate::In, "bookshelf")],
    ),
    (
        "a camera on a tripod",
        &["camera", "tripod"],
        &[("camera", Predicate::On, "tripod")],
    ),
    (
        "a statue in a museum",
        &["statue", "museum"],
        &[("statue", Predicate::In, "museum")],
    ),
    (
        "a dog in a car",
        &["dog", "car"],
        &[("dog", Predicate::In, "car")],
    ),
    (
        "a bird in a cage",
        &["bird", "cage"],
        &[("bird", Predicate::In, "cage")],
    ),
    (
        "sushi on a plate",
        &["sushi", "plate"],
        &[("sushi", Predicate::On, "plate")],
    ),
    ("a man and a woman dancing", &["man", "woman"], &[]),
    (
        "a rocket launching into space",
        &["rocket", "space"],
        &[("rocket", Predicate::In, "space")],
    ),
    (
        "a pirate ship on the sea",
        &["ship", "sea"],
        &[("ship", Predicate::On, "sea")],
    ),
    (
        "the moon over the mountains",
        &["moon", "mountain"],
        &[("moon", Predicate::Above, "mountain")],
    ),
];

#[test]
fn the_labelled_captions_entities_and_relations() {
    let captions: Vec<&str> = CAPTIONS.lines().filter(|l| !l.trim().is_empty()).collect();
    let every_seventh: Vec<&str> = captions.iter().step_by(7).copied().collect();
    let labelled: Vec<&str> = LABELLED.iter().map(|(c, ..)| *c).collect();
    assert_eq!(
        labelled, every_seventh,
        "the labelled subset is every seventh caption"
    );

    let (mut expected, mut found, mut given, mut right) = (0, 0, 0, 0);
    for (caption, entities, relations) in LABELLED {
        let csg = parse(caption).unwrap();
        let nouns: Vec<&str> = csg.nodes.iter().map(|n| n.noun()).collect();
        for entity in *entities {
            assert!(
                nouns.contains(entity),
                "{caption}: no {entity} in {nouns:?}"
            );
        }
        let noun_of = |id: &str| csg.node(id).map(|n| n.noun()).unwrap_or("");
        let parsed: Vec<(&str, Predicate, &str)> = csg
            .relations
            .iter()
            .map(|r| (noun_of(&r.subject), r.predicate, noun_of(&r.object)))
            .collect();
        expected += relations.len();
        found += relations.iter().filter(|r| parsed.contains(r)).count();
        given += parsed.len();
        right += parsed.iter().filter(|r| relations.contains(r)).count();
    }
    let recall = found as f64 / expected as f64;
    let precision = right as f64 / given as f64;
    println!(
        "relations: {found} of {expected} labelled found (recall {recall:.2}), {right} of {given} given right (precision {precision:.2})"
    );
    assert!(recall >= 0.85, "recall {recall:.2}");
    assert!(precision >= 0.85, "precision {precision:.2}");
}
