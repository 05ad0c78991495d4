//! The Causal Scene Graph (CSG): the entities a prompt names, their attributes, the relations
//! between them, and the effects that physics implies although the prompt rarely states them
//! (a reflection, a shadow). It travels as JSON with a version field.
//!
//! The schema is ours: the LINA paper describes the CSG only as a graph that "unifies causal
//! dependencies and spatial layouts". Nodes of the probe's world are typed by a closed
//! vocabulary of classes, so that each of their attributes and relations maps to one
//! automatic check (see `probe::check`); anything else a prompt names is a `thing` with its
//! noun and its words, which LINA's interventions steer and no checker judges.

pub mod layout;
pub mod parse;
pub mod rules;

use serde::{Deserialize, Serialize};

use lina_runtime::error::{Error, Result};

/// The schema version this build writes and reads.
pub const CSG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Csg {
    pub version: u32,
    pub nodes: Vec<Node>,
    pub relations: Vec<Relation>,
    /// Where the light comes from, when the scene has a directed light.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub light: Option<Light>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    pub class: Class,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<Colour>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    /// How many instances the node stands for ("three balls" is one node with count 3).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// A container's fill level, as the prompt states it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fill: Option<Fill>,
    /// True for effects that physics implies and the prompt does not name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implied: bool,
    /// Where the node lies in the image, as a box in [0, 1] image coordinates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<[f32; 4]>,
    /// For a `thing`: its noun as the prompt says it, in the singular ("cat").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Words that describe the node and that no other field holds ("fluffy", "wooden",
    /// "white", "sleeping").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Ball,
    Cube,
    Cone,
    Person,
    Table,
    Floor,
    Mirror,
    Puddle,
    Jar,
    Sand,
    Water,
    Lamp,
    Shadow,
    Reflection,
    /// Anything outside the probe's world: the node's `name` says what.
    Thing,
}

impl Class {
    /// Objects are the movable things a prompt counts, colours and stacks.
    pub fn is_object(self) -> bool {
        matches!(self, Class::Ball | Class::Cube | Class::Cone)
    }

    pub fn word(self) -> &'static str {
        match self {
            Class::Ball => "ball",
            Class::Cube => "cube",
            Class::Cone => "cone",
            Class::Person => "person",
            Class::Table => "table",
            Class::Floor => "floor",
            Class::Mirror => "mirror",
            Class::Puddle => "puddle",
            Class::Jar => "jar",
            Class::Sand => "sand",
            Class::Water => "water",
            Class::Lamp => "lamp",
            Class::Shadow => "shadow",
            Class::Reflection => "reflection",
            Class::Thing => "thing",
        }
    }

    /// The class a noun (singular) names, where it is one of the probe's.
    pub fn of_noun(noun: &str) -> Option<Class> {
        use Class::*;
        [
            Ball, Cube, Cone, Person, Table, Floor, Mirror, Puddle, Jar, Sand, Water, Lamp, Shadow,
            Reflection,
        ]
        .into_iter()
        .find(|c| c.word() == noun)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
}

impl Colour {
    pub const ALL: [Colour; 5] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
    ];

    pub fn word(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Medium,
    Large,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    LessThanHalf,
    MoreThanHalf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    Left,
    Right,
    Above,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relation {
    pub subject: String,
    pub predicate: Predicate,
    pub object: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Predicate {
    /// Rests on and touches (gravity and contact).
    On,
    /// Stands inside a region or container.
    In,
    LeftOf,
    RightOf,
    /// Partly hidden behind.
    Behind,
    CloseTo,
    FarFrom,
    /// Higher in the image than the object, not touching it ("a lamp above a table").
    Above,
    /// Lower in the image than the object, or under it ("a cat under a table").
    Below,
    /// The subject (a reflection) mirrors the object about the surface it stands on.
    ReflectionOf,
    /// The subject's pixels stay within the object's outline.
    BoundedBy,
    /// The subject (a shadow) is cast by the object, away from the light.
    ShadowOf,
}

impl Predicate {
    pub fn word(self) -> &'static str {
        match self {
            Predicate::On => "on",
            Predicate::In => "in",
            Predicate::LeftOf => "left_of",
            Predicate::RightOf => "right_of",
            Predicate::Behind => "behind",
            Predicate::CloseTo => "close_to",
            Predicate::FarFrom => "far_from",
            Predicate::Above => "above",
            Predicate::Below => "below",
            Predicate::ReflectionOf => "reflection_of",
            Predicate::BoundedBy => "bounded_by",
            Predicate::ShadowOf => "shadow_of",
        }
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Node {
    pub fn new(id: &str, class: Class) -> Self {
        Self {
            id: id.to_string(),
            class,
            colour: None,
            size: None,
            count: 1,
            fill: None,
            implied: false,
            layout: None,
            name: None,
            attributes: Vec::new(),
        }
    }

    /// A node for anything outside the probe's world, named by its noun.
    pub fn thing(id: &str, name: &str) -> Self {
        Self {
            name: Some(name.to_string()),
            ..Self::new(id, Class::Thing)
        }
    }

    /// The noun that names the node in a prompt: a thing's name, else its class's word.
    pub fn noun(&self) -> &str {
        self.name.as_deref().unwrap_or(self.class.word())
    }

    pub fn coloured(mut self, colour: Colour) -> Self {
        self.colour = Some(colour);
        self
    }

    pub fn sized(mut self, size: Size) -> Self {
        self.size = Some(size);
        self
    }

    pub fn implied(mut self) -> Self {
        self.implied = true;
        self
    }
}

impl Csg {
    pub fn new() -> Self {
        Self {
            version: CSG_VERSION,
            nodes: Vec::new(),
            relations: Vec::new(),
            light: None,
        }
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The object of `subject`'s first relation `predicate`: the mirror a reflection is
    /// bounded by, the object a shadow is cast by.
    pub fn object_of(&self, subject: &str, predicate: Predicate) -> Option<&Node> {
        self.relations
            .iter()
            .find(|r| r.subject == subject && r.predicate == predicate)
            .and_then(|r| self.node(&r.object))
    }

    pub fn relate(&mut self, subject: &str, predicate: Predicate, object: &str) {
        self.relations.push(Relation {
            subject: subject.to_string(),
            predicate,
            object: object.to_string(),
        });
    }

    /// Parses CSG JSON and checks that it is well formed.
    pub fn from_json(text: &str) -> Result<Self> {
        let csg: Csg = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("CSG JSON: {e}")))?;
        csg.validate()?;
        Ok(csg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CSG always serialises")
    }

    /// Checks the version, that ids are unique, that relations name known nodes, and that
    /// layouts are boxes inside the image.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidInput(format!("CSG: {msg}")));
        if self.version != CSG_VERSION {
            return bad(format!(
                "version {} is not supported (this build reads version {CSG_VERSION})",
                self.version
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if node.id.is_empty() {
                return bad(format!("node {i} has an empty id"));
            }
            if self.nodes[..i].iter().any(|n| n.id == node.id) {
                return bad(format!("node id \"{}\" is used twice", node.id));
            }
            if node.count == 0 {
                return bad(format!("node \"{}\" has count 0", node.id));
            }
            match (node.class, node.name.as_deref()) {
                (Class::Thing, None | Some("")) => {
                    return bad(format!("node \"{}\" is a thing without a name", node.id));
                }
                (Class::Thing, _) | (_, None) => {}
                (class, Some(_)) => {
                    return bad(format!(
                        "node \"{}\" has a name, which only a thing has (its class is {})",
                        node.id,
                        class.word()
                    ));
                }
            }
            if let Some([x0, y0, x1, y1]) = node.layout {
                let inside = |v: f32| (0.0..=1.0).contains(&v);
                if !(inside(x0) && inside(y0) && inside(x1) && inside(y1) && x0 < x1 && y0 < y1) {
                    return bad(format!(
                        "node \"{}\" has layout {:?}, which is not a box inside [0, 1]",
                        node.id,
                        [x0, y0, x1, y1]
                    ));
                }
            }
        }
        for r in &self.relations {
            for end in [&r.subject, &r.object] {
                if self.node(end).is_none() {
                    return bad(format!(
                        "relation {} {} {} names an unknown node \"{end}\"",
                        r.subject,
                        r.predicate.word(),
                        r.object
                    ));
                }
            }
            if r.subject == r.object {
                return bad(format!(
                    "relation {} relates \"{}\" to itself",
                    r.predicate.word(),
                    r.subject
                ));
            }
        }
        if let Some(cycle) = self.ordering_cycle() {
            return bad(format!(
                "the relations {} make a cycle, which no scene can satisfy",
                cycle.join(", ")
            ));
        }
        Ok(())
    }

    /// Relations that order their two nodes (higher than, inside, left of, in front of, made
    /// by) and close a loop: "a on b, b on a", or "a left_of b, b left_of c, c left_of a".
    /// Each such predicate reads as an edge `from -> to` in one of five orders; a loop in
    /// any order is a contradiction. Returns the loop's relations, in order.
    fn ordering_cycle(&self) -> Option<Vec<String>> {
        // (order, from, to): `from` comes before `to` in that order.
        let edges: Vec<(u8, &str, &str, &Relation)> = self
            .relations
            .iter()
            .filter_map(|r| {
                let (s, o) = (r.subject.as_str(), r.object.as_str());
                let edge = match r.predicate {
                    Predicate::On | Predicate::Above => (0, s, o),
                    Predicate::Below => (0, o, s),
                    Predicate::In => (1, s, o),
                    Predicate::LeftOf => (2, s, o),
                    Predicate::RightOf => (2, o, s),
                    Predicate::Behind => (3, s, o),
                    Predicate::ReflectionOf | Predicate::ShadowOf => (4, s, o),
                    Predicate::CloseTo | Predicate::FarFrom | Predicate::BoundedBy => return None,
                };
                Some((edge.0, edge.1, edge.2, r))
            })
            .collect();
        // Depth-first search along the edges of one order at a time, each node finished once
        // (linear in the relations, whatever a file holds): meeting a node still on the
        // path closes a loop.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            OnPath,
            Done,
        }
        for order in 0..5u8 {
            let mut mark = vec![Mark::New; self.nodes.len()];
            let index = |id: &str| self.nodes.iter().position(|n| n.id == id);
            for start in 0..self.nodes.len() {
                if mark[start] != Mark::New {
                    continue;
                }
                // The path: (node, the next of its edges to try), and the relation taken
                // into each node after the first.
                let mut stack = vec![(start, 0usize)];
                let mut taken: Vec<&Relation> = Vec::new();
                mark[start] = Mark::OnPath;
                while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                    let id = self.nodes[node].id.as_str();
                    let step = edges[*next..]
                        .iter()
                        .position(|&(o, from, _, _)| o == order && from == id);
                    let Some(offset) = step else {
                        mark[node] = Mark::Done;
                        stack.pop();
                        taken.pop();
                        continue;
                    };
                    let (_, _, to, relation) = edges[*next + offset];
                    *next += offset + 1;
                    let Some(to) = index(to) else { continue };
                    match mark[to] {
                        Mark::Done => {}
                        Mark::New => {
                            mark[to] = Mark::OnPath;
                            stack.push((to, 0));
                            taken.push(relation);
                        }
                        Mark::OnPath => {
                            // The loop runs from `to`'s place on the path to here.
                            let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                            let mut cycle: Vec<&Relation> = taken[from..].to_vec();
                            cycle.push(relation);
                            return Some(
                                cycle
                                    .iter()
                                    .map(|r| {
                                        format!("{} {} {}", r.subject, r.predicate.word(), r.object)
                                    })
                                    .collect(),
                            );
                        }
                    }
                }
            }
        }
        None
    }
}

impl Default for Csg {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Csg {
        let mut csg = Csg::new();
        csg.nodes
            .push(Node::new("ball", Class::Ball).coloured(Colour::Red));
        csg.nodes
            .push(Node::new("mirror", Class::Mirror).sized(Size::Small));
        csg.nodes
            .push(Node::new("reflection", Class::Reflection).implied());
        csg.relate("ball", Predicate::On, "mirror");
        csg.relate("reflection", Predicate::ReflectionOf, "ball");
        csg.relate("reflection", Predicate::BoundedBy, "mirror");
        csg
    }

    #[test]
    fn relations_that_close_a_loop_are_refused_naming_the_loop() {
        let mut csg = sample();
        csg.relate("mirror", Predicate::Below, "ball");
        csg.validate().expect("below is on's direction: no loop");
        csg.relate("mirror", Predicate::On, "ball");
        let e = csg.validate().unwrap_err().to_string();
        assert!(
            e.contains("ball on mirror, mirror on ball make a cycle"),
            "{e}"
        );

        let mut csg = sample();
        csg.nodes.push(Node::new("cube", Class::Cube));
        csg.relate("ball", Predicate::LeftOf, "cube");
        csg.relate("cube", Predicate::LeftOf, "mirror");
        csg.validate().expect("a chain is no loop");
        csg.relate("ball", Predicate::RightOf, "mirror");
        let e = csg.validate().unwrap_err().to_string();
        assert!(e.contains("make a cycle"), "{e}");
        assert!(e.contains("ball left_of cube"), "{e}");
    }

    #[test]
    fn json_round_trip() {
        let csg = sample();
        let text = csg.to_json();
        assert!(text.contains("\"implied\":true"), "{text}");
        assert_eq!(Csg::from_json(&text).unwrap(), csg);
    }

    #[test]
    fn unknown_node_version_and_bad_layout_are_refused() {
        let mut csg = sample();
        csg.relate("ball", Predicate::On, "table");
        let e = Csg::from_json(&csg.to_json()).unwrap_err().to_string();
        assert!(e.contains("unknown node \"table\""), "{e}");

        let mut csg = sample();
        csg.version = 99;
        let e = Csg::from_json(&csg.to_json()).unwrap_err().to_string();
        assert!(e.contains("version 99"), "{e}");

        let mut csg = sample();
        csg.nodes[0].layout = Some([0.5, 0.2, 0.4, 0.9]);
        let e = Csg::from_json(&csg.to_json()).unwrap_err().to_string();
        assert!(e.contains("not a box"), "{e}");

        let e = Csg::from_json("{\"version\": 1, \"nodes\": [")
            .unwrap_err()
            .to_string();
        assert!(e.contains("CSG JSON"), "{e}");

        // A misspelt field is an error, not a silently dropped attribute.
        let text = sample().to_json().replace("\"colour\"", "\"color\"");
        let e = Csg::from_json(&text).unwrap_err().to_string();
        assert!(e.contains("color"), "{e}");
    }
}
