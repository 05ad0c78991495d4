//! Scene-graph JSON of any text: parsed and validated; an accepted graph survives a round
//! trip through JSON and the rules that add implied effects.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lina_csg::Csg;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(csg) = Csg::from_json(text) else {
        return;
    };
    let again = Csg::from_json(&csg.to_json()).expect("a graph we wrote reads back");
    assert_eq!(again.to_json(), csg.to_json());
    let mut implied = csg.clone();
    lina_csg::rules::add_implied(&mut implied);
    implied.validate().expect("the rules keep a graph valid");
});
