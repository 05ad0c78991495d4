//! Rules that add the effects physics implies and prompts leave out: multi-hop reasoning
//! that models fail at ("a red ball on a small mirror" implies a reflection of the ball,
//! bounded by the mirror). The rules are ours; the paper names the idea, not the rules.
//!
//! - An object standing on a mirror or a puddle has a reflection, bounded by that surface.
//! - Under a directed light, every object casts a shadow (on the side away from the light;
//!   the direction is the graph's `light`).

use super::{Class, Csg, Node, Predicate};

/// The id of the effect node of `class` that `source` implies.
pub fn implied_id(class: Class, source: &str) -> String {
    format!("{}_of_{source}", class.word())
}

/// Adds every implied effect that the graph lacks; running it twice adds nothing more.
pub fn add_implied(csg: &mut Csg) {
    let mut added = Vec::new();
    for r in &csg.relations {
        if r.predicate != Predicate::On {
            continue;
        }
        let (Some(object), Some(surface)) = (csg.node(&r.subject), csg.node(&r.object)) else {
            continue;
        };
        if object.class.is_object() && matches!(surface.class, Class::Mirror | Class::Puddle) {
            added.push((
                Class::Reflection,
                object.id.clone(),
                Some(surface.id.clone()),
            ));
        }
    }
    if csg.light.is_some() {
        for node in csg.nodes.iter().filter(|n| n.class.is_object()) {
            added.push((Class::Shadow, node.id.clone(), None));
        }
    }
    for (class, source, bound) in added {
        let id = implied_id(class, &source);
        if csg.node(&id).is_some() {
            continue;
        }
        csg.nodes.push(Node::new(&id, class).implied());
        let link = match class {
            Class::Reflection => Predicate::ReflectionOf,
            _ => Predicate::ShadowOf,
        };
        csg.relate(&id, link, &source);
        if let Some(surface) = bound {
            csg.relate(&id, Predicate::BoundedBy, &surface);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Colour, Light};

    #[test]
    fn a_ball_on_a_mirror_gets_a_bounded_reflection_and_a_lamp_gets_shadows() {
        let mut csg = Csg::new();
        csg.nodes
            .push(Node::new("ball", Class::Ball).coloured(Colour::Red));
        csg.nodes.push(Node::new("mirror", Class::Mirror));
        csg.relate("ball", Predicate::On, "mirror");
        add_implied(&mut csg);
        let r = csg.node("reflection_of_ball").expect("a reflection");
        assert!(r.implied);
        assert!(
            csg.relations
                .iter()
                .any(|r| r.subject == "reflection_of_ball"
                    && r.predicate == Predicate::BoundedBy
                    && r.object == "mirror")
        );
        assert!(csg.node("shadow_of_ball").is_none(), "no light, no shadow");

        csg.light = Some(Light::Left);
        add_implied(&mut csg);
        add_implied(&mut csg);
        assert_eq!(csg.nodes.len(), 4, "{:?}", csg.nodes);
        csg.validate().unwrap();
    }
}
