#![cfg(not(target_arch = "wasm32"))]
//! The open-vocabulary parser leaves the probe's world to the probe's reader: every prompt of
//! every scene kind the probe draws parses into the graph that reader gives, with no `thing`
//! in it, so the checker judges exactly what it did before the parser took any prompt.

use lina_csg::Class;
use lina_csg::parse::{parse, probe_world};
use lina_probe::scenes::{Category, Split, sample};
use lina_runtime::rng::Rng;

#[test]
fn every_probe_prompt_reads_as_the_probes_own_graph() {
    let mut seen = 0;
    for category in Category::ALL {
        for split in [Split::Train, Split::Test, Split::Ood] {
            for broken in [false, true] {
                for seed in 0..60 {
                    let scene = sample(category, split, &mut Rng::new(seed), broken);
                    let csg = parse(&scene.prompt).unwrap();
                    assert_eq!(csg, probe_world(&scene.prompt).unwrap(), "{}", scene.prompt);
                    assert!(
                        csg.nodes.iter().all(|n| n.class != Class::Thing),
                        "{}: {csg:?}",
                        scene.prompt
                    );
                    seen += 1;
                }
            }
        }
    }
    assert_eq!(seen, 7 * 3 * 2 * 60);
}
