//! What the segmenter tells apart: what each pixel shows, by appearance.
//!
//! A puddle and the water of a beach or a jar look the same, so they share a label; a
//! person's head and shirt are one label; every reflection is one label whatever it mirrors.

use lina_csg::{Class, Colour, Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Label {
    Wall,
    Floor,
    Shadow,
    Mirror,
    Water,
    Sand,
    Table,
    Jar,
    Lamp,
    Person,
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Reflection,
}

impl Label {
    pub const ALL: [Label; 16] = [
        Label::Wall,
        Label::Floor,
        Label::Shadow,
        Label::Mirror,
        Label::Water,
        Label::Sand,
        Label::Table,
        Label::Jar,
        Label::Lamp,
        Label::Person,
        Label::Red,
        Label::Green,
        Label::Blue,
        Label::Yellow,
        Label::Purple,
        Label::Reflection,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Label> {
        Label::ALL.get(i).copied()
    }

    /// The label of a node's pixels; `None` for what the segmenter was not trained on (a
    /// `thing` outside the probe's world, an uncoloured object).
    pub fn of_node(node: &Node) -> Option<Label> {
        Some(match node.class {
            Class::Ball | Class::Cube | Class::Cone => match node.colour? {
                Colour::Red => Label::Red,
                Colour::Green => Label::Green,
                Colour::Blue => Label::Blue,
                Colour::Yellow => Label::Yellow,
                Colour::Purple => Label::Purple,
            },
            Class::Person => Label::Person,
            Class::Table => Label::Table,
            Class::Floor => Label::Floor,
            Class::Mirror => Label::Mirror,
            Class::Puddle | Class::Water => Label::Water,
            Class::Sand => Label::Sand,
            Class::Jar => Label::Jar,
            Class::Lamp => Label::Lamp,
            Class::Shadow => Label::Shadow,
            Class::Reflection => Label::Reflection,
            Class::Thing => return None,
        })
    }

    /// Where two nodes claim a pixel in the training masks (a reflection is also part of the
    /// surface it lies on), the higher rank wins: what is drawn on top.
    pub fn rank(self) -> u8 {
        match self {
            Label::Reflection => 9,
            Label::Shadow => 8,
            Label::Red | Label::Green | Label::Blue | Label::Yellow | Label::Purple => 7,
            Label::Person => 6,
            Label::Sand | Label::Water => 5,
            Label::Jar => 4,
            Label::Table => 3,
            Label::Mirror => 2,
            Label::Lamp => 1,
            Label::Wall | Label::Floor => 0,
        }
    }

    /// Training labels for one rendered image: for each pixel, the highest-ranked label of
    /// the nodes whose masks hold it, else the wall above row `ground` and the floor below.
    pub fn training_map(
        nodes: &[Node],
        masks: &[Vec<bool>],
        [width, height]: [usize; 2],
        ground: f32,
    ) -> Vec<u8> {
        let labels: Vec<Option<Label>> = nodes.iter().map(Label::of_node).collect();
        (0..width * height)
            .map(|p| {
                let background = if ((p / width) as f32 + 0.5) < ground {
                    Label::Wall
                } else {
                    Label::Floor
                };
                masks
                    .iter()
                    .zip(&labels)
                    .filter(|(m, _)| m[p])
                    .filter_map(|(_, l)| *l)
                    .max_by_key(|l| l.rank())
                    .unwrap_or(background) as u8
            })
            .collect()
    }
}
