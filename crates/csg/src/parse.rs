//! Prompt to CSG, for any prompt. Two readers, tried in order:
//! - the probe's world: objects (ball, cube, cone) with colours and counts, mirrors and
//!   puddles, tables and the floor, lamps and light directions, jars of sand or water, a
//!   person on a beach, and the relations between them, read by keyword and pattern into
//!   exactly the graphs the probe's checker judges;
//! - everything else ([`open`]): each noun phrase becomes a node (a `thing` named by its noun
//!   unless the noun is one of the probe's classes) with its count, colour, size and other
//!   words, and the prepositions it knows become relations. Unknown words stay attributes; it
//!   never fails on a prompt with a word in it.
//!
//! `rules::add_implied` then adds the effects that physics implies.

use super::rules::add_implied;
use super::{Class, Colour, Csg, Fill, Light, Node, Predicate, Size};
use lina_runtime::error::{Error, Result};

/// An object phrase: "a red ball", "three green cubes", "a row of four yellow cones".
#[derive(Debug, Clone, Copy, PartialEq)]
struct Phrase {
    kind: Class,
    colour: Option<Colour>,
    count: u32,
    /// Word index of the kind noun, to order phrases around relation words.
    at: usize,
}

fn kind(word: &str) -> Option<Class> {
    Some(match word.trim_end_matches('s') {
        "ball" => Class::Ball,
        "cube" => Class::Cube,
        "cone" => Class::Cone,
        _ => return None,
    })
}

fn colour(word: &str) -> Option<Colour> {
    Colour::ALL.into_iter().find(|c| c.word() == word)
}

fn number(word: &str) -> Option<u32> {
    const WORDS: [&str; 10] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    match word {
        "a" | "an" => Some(1),
        _ => WORDS
            .iter()
            .position(|w| *w == word)
            .map(|i| i as u32 + 1)
            .or_else(|| word.parse().ok().filter(|n| (1..=99).contains(n))),
    }
}

/// Every object phrase, in order.
fn phrases(words: &[&str]) -> Vec<Phrase> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let Some(kind) = kind(w) else { continue };
        let colour = i.checked_sub(1).and_then(|j| colour(words[j]));
        let before = i - colour.is_some() as usize;
        let count = before
            .checked_sub(1)
            .and_then(|j| number(words[j]))
            .unwrap_or(1);
        out.push(Phrase {
            kind,
            colour,
            count,
            at: i,
        });
    }
    out
}

fn has(text: &str, words: &str) -> bool {
    format!(" {text} ").contains(&format!(" {words} "))
}

fn position(words: &[&str], phrase: &str) -> Option<usize> {
    let target: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(target.len())
        .position(|w| w == target.as_slice())
}

fn object_node(id: &str, p: &Phrase) -> Node {
    let mut node = Node::new(id, p.kind);
    node.colour = p.colour;
    node.count = p.count;
    node
}

/// Parses a prompt into its CSG, with the implied effects added: by the probe's reader where
/// the prompt names nothing outside the probe's world and that reader can place it, else by
/// the open reader. Fails only on a prompt without a word.
pub fn parse(prompt: &str) -> Result<Csg> {
    if !prompt.chars().any(char::is_alphanumeric) {
        return Err(Error::InvalidInput("the prompt is empty".into()));
    }
    let open = open(prompt)?;
    let outside = open
        .nodes
        .iter()
        .any(|n| n.class == Class::Thing && !PROBE_WORDS.contains(&n.noun()));
    if outside {
        return Ok(open);
    }
    probe_world(prompt).or(Ok(open))
}

/// The probe's reader: what it cannot place is an error naming the prompt, never a guess.
pub fn probe_world(prompt: &str) -> Result<Csg> {
    let lower = prompt.to_lowercase();
    let cleaned: String = lower
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    let words: Vec<&str> = cleaned.split_whitespace().collect();
    if words.is_empty() {
        return Err(Error::InvalidInput("the prompt is empty".into()));
    }
    let text = words.join(" ");
    let objects = phrases(&words);
    let unknown = || {
        Error::InvalidInput(format!(
            "cannot build a scene graph for \"{prompt}\": it uses no relation the parser knows"
        ))
    };
    let mut csg = Csg::new();

    if has(&text, "person") {
        beach(&text, &mut csg);
    } else if has(&text, "jar") {
        jar(&text, &mut csg)?;
    } else if ["lamp", "lit from", "light from"]
        .iter()
        .any(|w| has(&text, w))
    {
        if objects.is_empty() {
            return Err(unknown());
        }
        let light = if has(&text, "left") {
            Light::Left
        } else if has(&text, "right") {
            Light::Right
        } else {
            Light::Above
        };
        csg.light = Some(light);
        csg.nodes.push(Node::new("lamp", Class::Lamp));
        for (i, p) in objects.iter().enumerate() {
            csg.nodes.push(object_node(&format!("object{}", i + 1), p));
        }
    } else if has(&text, "mirror") || has(&text, "puddle") {
        let [p] = objects.as_slice() else {
            return Err(Error::InvalidInput(format!(
                "\"{prompt}\": a mirror or puddle scene needs exactly one object, found {}",
                objects.len()
            )));
        };
        csg.nodes.push(object_node("object", p));
        let class = if has(&text, "mirror") {
            Class::Mirror
        } else {
            Class::Puddle
        };
        let size = if has(&text, "small") {
            Size::Small
        } else {
            Size::Large
        };
        csg.nodes.push(Node::new("surface", class).sized(size));
        csg.relate("object", Predicate::On, "surface");
    } else if objects.len() == 2 && ["behind", "in front of"].iter().any(|w| has(&text, w)) {
        // "A (partly hidden) behind B" or "B in front of A".
        let (hidden, front) = if has(&text, "in front of") {
            (objects[1], objects[0])
        } else {
            (objects[0], objects[1])
        };
        csg.nodes.push(object_node("hidden", &hidden));
        csg.nodes.push(object_node("front", &front));
        csg.relate("hidden", Predicate::Behind, "front");
    } else if objects.len() == 2 && (has(&text, "left of") || has(&text, "right of")) {
        let (subject, other) = (objects[0], objects[1]);
        let left_of = has(&text, "left of");
        let (left, right) = if left_of {
            (subject, other)
        } else {
            (other, subject)
        };
        csg.nodes.push(object_node("left", &left));
        csg.nodes.push(object_node("right", &right));
        if left_of {
            csg.relate("left", Predicate::LeftOf, "right");
        } else {
            csg.relate("right", Predicate::RightOf, "left");
        }
    } else if objects.len() == 1 && (has(&text, "floor") || has(&text, "table")) {
        csg.nodes.push(object_node("object", &objects[0]));
        let support = if has(&text, "floor") {
            Node::new("floor", Class::Floor)
        } else {
            Node::new("table", Class::Table)
        };
        let id = support.id.clone();
        csg.nodes.push(support);
        csg.relate("object", Predicate::On, &id);
    } else if objects.len() == 2 && has(&text, "on") {
        // "A on B", "A on top of B", "A resting on B", or "B with A on it"; anything else
        // (an "on" outside the two phrases) is not guessed at.
        let on = position(&words, "on").ok_or_else(unknown)?;
        let (top, bottom) = if has(&text, "on it") {
            (objects[1], objects[0])
        } else if objects[0].at < on && on < objects[1].at {
            (objects[0], objects[1])
        } else {
            return Err(unknown());
        };
        csg.nodes.push(object_node("top", &top));
        csg.nodes.push(object_node("bottom", &bottom));
        csg.relate("top", Predicate::On, "bottom");
    } else if objects.len() == 1 {
        csg.nodes.push(object_node("objects", &objects[0]));
    } else {
        return Err(unknown());
    }
    add_implied(&mut csg);
    csg.validate()?;
    Ok(csg)
}

/// The prepositions the open reader knows, and the relation each gives: `(words, predicate,
/// reversed)`, where `reversed` makes the later phrase the subject ("a dog in front of a
/// house": the house is behind the dog). Longer phrases come before their first word alone.
#[rustfmt::skip]
const RELATION_PHRASES: &[(&str, Predicate, bool)] = &[
    ("on top of", Predicate::On, false),
    ("full of", Predicate::In, true),
    ("filled with", Predicate::In, true),
    ("covered in", Predicate::On, true),
    ("covered with", Predicate::On, true),
    ("on the edge of", Predicate::On, false),
    ("in the middle of", Predicate::In, false),
    ("in front of", Predicate::Behind, true),
    ("to the left of", Predicate::LeftOf, false),
    ("on the left of", Predicate::LeftOf, false),
    ("left of", Predicate::LeftOf, false),
    ("to the right of", Predicate::RightOf, false),
    ("on the right of", Predicate::RightOf, false),
    ("right of", Predicate::RightOf, false),
    ("on the side of", Predicate::CloseTo, false),
    ("next to", Predicate::CloseTo, false),
    ("close to", Predicate::CloseTo, false),
    ("far away from", Predicate::FarFrom, false),
    ("far from", Predicate::FarFrom, false),
    ("away from", Predicate::FarFrom, false),
    ("on", Predicate::On, false),
    ("onto", Predicate::On, false),
    ("upon", Predicate::On, false),
    ("atop", Predicate::On, false),
    ("in", Predicate::In, false),
    ("inside", Predicate::In, false),
    ("into", Predicate::In, false),
    ("within", Predicate::In, false),
    ("under", Predicate::Below, false),
    ("underneath", Predicate::Below, false),
    ("beneath", Predicate::Below, false),
    ("below", Predicate::Below, false),
    ("above", Predicate::Above, false),
    ("over", Predicate::Above, false),
    ("behind", Predicate::Behind, false),
    ("beside", Predicate::CloseTo, false),
    ("near", Predicate::CloseTo, false),
    ("by", Predicate::CloseTo, false),
    ("among", Predicate::CloseTo, false),
    ("between", Predicate::CloseTo, false),
    // Along a surface: "skiing down a slope", "walking up the stairs".
    ("down", Predicate::On, false),
    ("up", Predicate::On, false),
];

/// Words that end a clause: what follows is about a new subject.
#[rustfmt::skip]
const CLAUSE_BREAKS: &[&str] = &[",", "and", "while", "as", "but", "where", "which", "that", "who"];

/// Words that end a noun phrase without a relation: "with" (a man with a hat), "of" (a bowl
/// of fruit), "full of", and the prepositions of motion.
#[rustfmt::skip]
const PHRASE_BREAKS: &[&str] = &[
    "with", "of", "for", "from", "at", "to", "against", "through", "full", "down", "up",
    "along", "across", "around", "past", "toward", "towards", "out", "off", "during",
];

/// Helper verbs: they name nothing, before a noun or after it.
#[rustfmt::skip]
const HELPERS: &[&str] = &[
    "is", "are", "was", "were", "be", "being", "been", "has", "have", "had", "can", "could",
    "will", "would", "does", "do",
];

/// Verbs common in captions that end a noun phrase when they follow its noun ("a cat sits on
/// ..."); words ending in "ing" do too. Before a noun they may be nouns ("a guitar on a
/// stand"), so there they stay.
#[rustfmt::skip]
const VERBS: &[&str] = &[
    "sits", "sit", "sat", "stands", "stand", "stood", "lies", "lie", "lay", "rests", "hangs",
    "flies", "holds", "looks", "runs", "walks", "plays", "eats", "floats", "grows", "leans",
    "perched", "parked", "placed", "covered", "filled", "made", "seen", "shown", "painted",
    "stacked", "surrounded", "reflected", "lit",
];

/// Words that fill a noun phrase without being its noun or saying anything of it.
#[rustfmt::skip]
const FILLERS: &[&str] = &[
    "a", "an", "the", "this", "that", "these", "those", "some", "many", "several", "few",
    "lots", "lot", "its", "his", "her", "their", "our", "my", "your", "each", "every",
    "other", "another", "there", "here", "very", "really", "highly", "together", "alone",
    "again", "mostly", "s",
];

/// Words that stand for an earlier node ("a table with a cat on it"): no new node.
const PRONOUNS: &[&str] = &["it", "them", "him", "her", "they", "itself", "one"];

/// Nouns that frame a caption rather than name an entity, before "of": "a photo of ...",
/// "an oil painting of ...".
#[rustfmt::skip]
const FRAMES: &[&str] = &[
    "photo", "photograph", "picture", "image", "painting", "drawing", "illustration",
    "render", "rendering", "sketch", "view", "shot", "closeup", "portrait", "watercolor",
    "watercolour", "close",
];

/// Style words that name no entity anywhere: "..., 4k, trending on artstation".
#[rustfmt::skip]
const STYLE: &[&str] = &[
    "4k", "8k", "hd", "hdr", "uhd", "style", "quality", "resolution", "artstation", "art",
    "lighting", "masterpiece", "wallpaper", "bokeh", "dslr", "octane", "unreal", "engine",
    "trending", "cinematic", "photorealistic", "realistic", "detailed",
];

/// Nouns the open reader finds in the probe's own prompts that are not entities of its
/// world: directions, fill levels, arrangements ("lit from the left", "more sand than empty
/// space", "a row of cones"). A prompt whose other nouns are all the probe's classes is one
/// of its scenes (`crates/probe/tests` checks every scene kind).
#[rustfmt::skip]
const PROBE_WORDS: &[&str] = &[
    "fall", "full", "hidden", "left", "light", "right", "row", "sea", "space", "top", "side",
    "front", "half", "beach",
];

/// The singular of an English noun, for the common plural forms.
fn singular(word: &str) -> String {
    #[rustfmt::skip]
    const IRREGULAR: &[(&str, &str)] = &[
        ("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child"),
        ("mice", "mouse"), ("geese", "goose"), ("feet", "foot"), ("teeth", "tooth"),
        ("leaves", "leaf"), ("knives", "knife"), ("wolves", "wolf"), ("shelves", "shelf"),
        ("shoes", "shoe"), ("potatoes", "potato"), ("tomatoes", "tomato"),
        ("heroes", "hero"),
    ];
    /// Nouns that end in "s" in the singular, or have no singular.
    #[rustfmt::skip]
    const SINGULAR_S: &[&str] = &[
        "mars", "christmas", "jeans", "pants", "news", "lens", "gas", "texas", "vegas",
        "glasses", "scissors", "series", "species", "physics", "chess", "sheep", "fish",
        "deer", "clothes",
    ];
    if let Some((_, one)) = IRREGULAR.iter().find(|(many, _)| *many == word) {
        return one.to_string();
    }
    let keep = ["ss", "us", "is", "ous"];
    if SINGULAR_S.contains(&word) || word.len() <= 3 || keep.iter().any(|k| word.ends_with(k)) {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    for ending in ["ches", "shes", "xes", "sses"] {
        if word.ends_with(ending) {
            return word[..word.len() - 2].to_string();
        }
    }
    word.strip_suffix('s').unwrap_or(word).to_string()
}

fn size_of(word: &str) -> Option<Size> {
    Some(match word {
        "small" | "tiny" | "little" | "miniature" => Size::Small,
        "medium" => Size::Medium,
        "large" | "big" | "huge" | "giant" | "tall" => Size::Large,
        _ => return None,
    })
}

/// The relation phrase that starts at `words[i]`: its length, predicate and direction.
fn relation_at(words: &[&str], i: usize) -> Option<(usize, Predicate, bool)> {
    RELATION_PHRASES
        .iter()
        .find_map(|&(phrase, predicate, reversed)| {
            let parts: Vec<&str> = phrase.split(' ').collect();
            (words.get(i..i + parts.len()) == Some(parts.as_slice())).then_some((
                parts.len(),
                predicate,
                reversed,
            ))
        })
}

/// How a noun phrase ends in the open reader.
#[derive(Debug, Clone, PartialEq)]
enum Cut {
    /// A relation word: the next phrase is its object.
    Relation(Predicate, bool),
    /// "and", a comma: a new clause with a new subject.
    Clause,
    /// "with", "of", ...: a new phrase, unrelated; the word is kept.
    Phrase(String),
    /// A verb after the phrase's noun: an attribute of it ("sleeping"), then a new phrase.
    Verb(String),
}

/// A phrase's words without the fillers: what may be its noun and modifiers.
fn content<'a>(words: &[&'a str]) -> Vec<&'a str> {
    words
        .iter()
        .copied()
        .filter(|w| !FILLERS.contains(w))
        .collect()
}

/// The prompt's words cut into noun phrases, each with what ends it.
fn open_phrases<'a>(words: &[&'a str]) -> Vec<(Vec<&'a str>, Option<Cut>)> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let has_noun = content(&current).iter().any(|w| number(w).is_none());
        let cut = if let Some((len, p, reversed)) = relation_at(words, i) {
            i += len - 1;
            Some(Cut::Relation(p, reversed))
        } else if CLAUSE_BREAKS.contains(&w) {
            Some(Cut::Clause)
        } else if PHRASE_BREAKS.contains(&w) {
            Some(Cut::Phrase(w.to_string()))
        } else if has_noun && (VERBS.contains(&w) || HELPERS.contains(&w) || is_verb_ing(w)) {
            Some(Cut::Verb(w.to_string()))
        } else {
            None
        };
        match cut {
            Some(cut) => out.push((std::mem::take(&mut current), Some(cut))),
            None if HELPERS.contains(&w) => {}
            None => current.push(w),
        }
        i += 1;
    }
    out.push((current, None));
    out
}

/// An "-ing" word that may be a verb ("sleeping"); "painting" of "an oil painting of" frames.
fn is_verb_ing(word: &str) -> bool {
    word.len() > 4 && word.ends_with("ing") && !FRAMES.contains(&word)
}

/// One noun phrase's words read into a node: the last is the noun, the ones before it its
/// count, colour, size or other attributes. `None` without a noun.
fn phrase_node(words: &[&str]) -> Option<Node> {
    let content = content(words);
    let (&noun, before) = content.split_last()?;
    let participle = noun.len() > 4 && noun.ends_with("ed");
    if PRONOUNS.contains(&noun) || number(noun).is_some() || STYLE.contains(&noun) || participle {
        return None;
    }
    let name = singular(noun);
    let mut node = match Class::of_noun(&name) {
        Some(class) => Node::new(&name, class),
        None => Node::thing(&name, &name),
    };
    let mut counted = false;
    for w in before {
        if let Some(n) = number(w) {
            node.count = n;
            counted = true;
        } else if let Some(c) = colour(w).filter(|_| node.colour.is_none()) {
            node.colour = Some(c);
        } else if let Some(s) = size_of(w).filter(|_| node.size.is_none()) {
            node.size = Some(s);
        } else if !STYLE.contains(w) {
            node.attributes.push(w.to_string());
        }
    }
    if !counted && name != noun {
        // A plural without a number: several.
        node.count = 2;
        node.attributes.push("several".into());
    }
    Some(node)
}

/// The open reader: noun phrases become nodes, and known prepositions relations (see the
/// module documentation). A relation's subject is the node of the phrase after "with" that
/// precedes it ("an airport with planes on the runway"), else its clause's first node ("a
/// bowl of fruit on a table"); its object is the next phrase's node. A pronoun object ("a
/// table with a cat on it") points back at the clause's first node. A prompt whose words
/// name nothing ("highly detailed, 4k") gives a graph without nodes.
pub fn open(prompt: &str) -> Result<Csg> {
    let lower = prompt.to_lowercase().replace("'s ", " ");
    let cleaned: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == ',' {
                c
            } else {
                ' '
            }
        })
        .collect();
    let spaced = cleaned.replace(',', " , ");
    let words: Vec<&str> = spaced.split_whitespace().collect();
    if words.iter().all(|w| *w == ",") {
        return Err(Error::InvalidInput("the prompt is empty".into()));
    }

    let mut csg = Csg::new();
    // The clause's first node, the node of a phrase after "with", the last node, and the
    // relation waiting for its object.
    let mut subject: Option<String> = None;
    let mut with: Option<String> = None;
    let mut last: Option<String> = None;
    let mut pending: Option<(Predicate, bool)> = None;
    let mut after_with = false;
    for (words, cut) in open_phrases(&words) {
        let frame = matches!(&cut, Some(Cut::Phrase(w)) if w == "of")
            && content(&words).last().is_some_and(|w| FRAMES.contains(w));
        let pronoun = content(&words).last().is_some_and(|w| PRONOUNS.contains(w));
        let node = if frame { None } else { phrase_node(&words) };
        let (from, to) = match node {
            Some(mut node) => {
                let base = node.id.clone();
                let mut n = 1;
                while csg.node(&node.id).is_some() {
                    n += 1;
                    node.id = format!("{base}{n}");
                }
                let id = node.id.clone();
                csg.nodes.push(node);
                let from = with.clone().or_else(|| subject.clone());
                subject.get_or_insert_with(|| id.clone());
                if after_with {
                    with = Some(id.clone());
                }
                last = Some(id.clone());
                (from, Some(id))
            }
            None if pronoun => (last.clone(), subject.clone()),
            None => (None, None),
        };
        if let (Some((p, reversed)), Some(s), Some(o)) = (pending.take(), from, to) {
            let (a, b) = if reversed { (o, s) } else { (s, o) };
            if a != b {
                csg.relate(&a, p, &b);
            }
        }
        after_with = false;
        match cut {
            Some(Cut::Relation(p, reversed)) => pending = Some((p, reversed)),
            Some(Cut::Clause) => {
                subject = None;
                with = None;
            }
            Some(Cut::Verb(verb)) => {
                let id = last.as_ref();
                if let Some(node) = id.and_then(|id| csg.nodes.iter_mut().find(|n| n.id == *id))
                    && !HELPERS.contains(&verb.as_str())
                {
                    node.attributes.push(verb);
                }
            }
            Some(Cut::Phrase(word)) => after_with = word == "with",
            None => {}
        }
    }
    add_implied(&mut csg);
    csg.validate()?;
    Ok(csg)
}

/// "a person in the water", "a person close to the water and in the sand", ...
fn beach(text: &str, csg: &mut Csg) {
    for (id, class) in [
        ("person", Class::Person),
        ("sand", Class::Sand),
        ("water", Class::Water),
    ] {
        csg.nodes.push(Node::new(id, class));
    }
    if has(text, "in the water") {
        csg.relate("person", Predicate::In, "water");
    }
    if has(text, "in the sand") || has(text, "on the sand") {
        csg.relate("person", Predicate::In, "sand");
    }
    if has(text, "close to the water") || has(text, "close to the sea") {
        csg.relate("person", Predicate::CloseTo, "water");
    }
    if has(text, "far from the water") {
        csg.relate("person", Predicate::FarFrom, "water");
    }
}

/// "a jar with a little sand", "more water than empty space in the jar", ...
fn jar(text: &str, csg: &mut Csg) -> Result<()> {
    let (id, class) = if has(text, "sand") {
        ("sand", Class::Sand)
    } else if has(text, "water") {
        ("water", Class::Water)
    } else {
        return Err(Error::InvalidInput(format!(
            "\"{text}\": a jar of what? (sand or water)"
        )));
    };
    let more = has(text, "more than half")
        || has(text, &format!("more {id} than empty space"))
        || has(text, "mostly full")
        || has(text, "full of");
    let less = has(text, "a little")
        || has(text, "less than half")
        || has(text, &format!("more empty space than {id}"));
    let mut jar = Node::new("jar", Class::Jar);
    jar.fill = match (more && !less, less) {
        (true, _) => Some(Fill::MoreThanHalf),
        (_, true) => Some(Fill::LessThanHalf),
        _ => None,
    };
    csg.nodes.push(jar);
    csg.nodes.push(Node::new(id, class));
    csg.relate(id, Predicate::In, "jar");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_examples() {
        let csg = parse("A red ball on a small mirror.").unwrap();
        assert_eq!(csg.node("surface").unwrap().size, Some(Size::Small));
        assert!(csg.node("reflection_of_object").unwrap().implied);

        let csg = parse("a person is close to the water and in the sand").unwrap();
        let preds: Vec<_> = csg
            .relations
            .iter()
            .map(|r| (r.predicate, r.object.as_str()))
            .collect();
        assert!(preds.contains(&(Predicate::In, "sand")), "{preds:?}");
        assert!(preds.contains(&(Predicate::CloseTo, "water")), "{preds:?}");

        let csg = parse("there is more sand than empty space in the jar").unwrap();
        assert_eq!(csg.node("jar").unwrap().fill, Some(Fill::MoreThanHalf));
    }

    #[test]
    fn swapped_roles_give_swapped_graphs() {
        let a = parse("a red cube on a blue cube").unwrap();
        let b = parse("a blue cube on a red cube").unwrap();
        assert_eq!(a.node("top").unwrap().colour, Some(Colour::Red));
        assert_eq!(b.node("top").unwrap().colour, Some(Colour::Blue));
    }

    #[test]
    fn counts_and_with_it_phrases() {
        assert_eq!(parse("six green cones").unwrap().nodes[0].count, 6);
        assert_eq!(parse("3 red balls").unwrap().nodes[0].count, 3);
        let csg = parse("a blue cube with a red ball on it").unwrap();
        assert_eq!(csg.node("top").unwrap().class, Class::Ball);
    }

    #[test]
    fn prompts_outside_the_probes_world_get_an_open_graph() {
        // Two objects on one mirror: not a probe scene, so read openly, but with the probe's
        // classes, and the rules still add the reflection of what stands on the mirror.
        let csg = parse("a red ball and a blue cube on a mirror").unwrap();
        assert_eq!(csg.node("ball").unwrap().colour, Some(Colour::Red));
        assert!(csg.node("reflection_of_cube").is_some(), "{csg:?}");

        let csg = parse("a cat and a dog").unwrap();
        let names: Vec<_> = csg.nodes.iter().map(|n| (n.class, n.noun())).collect();
        assert_eq!(names, [(Class::Thing, "cat"), (Class::Thing, "dog")]);

        let csg = parse("three fluffy white cats sleeping on a wooden bench").unwrap();
        let cat = csg.node("cat").unwrap();
        assert_eq!(cat.count, 3);
        assert_eq!(cat.attributes, ["fluffy", "white", "sleeping"]);
        assert_eq!(csg.relations.len(), 1);
        assert_eq!(csg.relations[0].predicate, Predicate::On);
        assert_eq!(csg.relations[0].object, "bench");

        let csg = parse("a dog in front of a house").unwrap();
        let r = &csg.relations[0];
        assert_eq!(
            (r.subject.as_str(), r.predicate, r.object.as_str()),
            ("house", Predicate::Behind, "dog")
        );

        let csg = parse("a table with a cat on it").unwrap();
        let r = &csg.relations[0];
        assert_eq!(
            (r.subject.as_str(), r.predicate, r.object.as_str()),
            ("cat", Predicate::On, "table")
        );

        // Words that name nothing give no node, and only a prompt without words is an error.
        assert!(parse("highly detailed, 4k").unwrap().nodes.is_empty());
        assert!(parse("  ,. ").unwrap_err().to_string().contains("empty"));
    }
}
