//! Prints the scene graph of each prompt given, one line of nodes and one of relations:
//! `cargo run -p lina-csg --example parse -- "a cat sleeping on a sofa" ...`.

fn main() {
    for prompt in std::env::args().skip(1) {
        println!("{prompt}");
        match lina_csg::parse::parse(&prompt) {
            Ok(csg) => {
                let nodes: Vec<String> = csg
                    .nodes
                    .iter()
                    .map(|n| {
                        let mut words: Vec<String> = n.attributes.clone();
                        words.extend(n.colour.map(|c| c.word().to_string()));
                        if n.count > 1 {
                            words.push(format!("x{}", n.count));
                        }
                        format!(
                            "{} ({}{})",
                            n.id,
                            n.noun(),
                            words.iter().map(|w| format!(" {w}")).collect::<String>()
                        )
                    })
                    .collect();
                let relations: Vec<String> = csg
                    .relations
                    .iter()
                    .map(|r| format!("{} {} {}", r.subject, r.predicate.word(), r.object))
                    .collect();
                println!(
                    "  nodes: {}\n  relations: {}",
                    nodes.join(", "),
                    relations.join("; ")
                );
            }
            Err(e) => println!("  error: {e}"),
        }
    }
}
