//! Prompt to CSG, for the probe's vocabulary: objects (ball, cube, cone) with colours and
//! counts, mirrors and puddles, tables and the floor, lamps and light directions, jars of
//! sand or water, a person on a beach, and the relations between them. The parser reads the
//! explicit graph; `rules::add_implied` then adds the effects that physics implies.
//!
//! It is a keyword-and-pattern reader, not a general parser: what it cannot place becomes a
//! clear error naming the prompt, never a guess.

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

/// Parses a prompt into its CSG, with the implied effects added.
pub fn parse(prompt: &str) -> Result<Csg> {
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
    fn unknown_prompts_are_clear_errors() {
        for prompt in [
            "a lamp",
            "a red ball and a blue cube on a mirror",
            "a red ball and a blue cube sitting on the bench",
        ] {
            assert!(parse(prompt).is_err(), "{prompt}");
        }
        let e = parse("a cat and a dog").unwrap_err().to_string();
        assert!(e.contains("cannot build a scene graph"), "{e}");
        assert!(parse("  ,. ").unwrap_err().to_string().contains("empty"));
    }
}
