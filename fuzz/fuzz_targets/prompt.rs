//! Any prompt through the prompt-to-scene-graph parser: what it accepts is a valid graph.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(prompt) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(csg) = lina_csg::parse::parse(prompt) {
        csg.validate().expect("the parser's graph is valid");
        lina_csg::Csg::from_json(&csg.to_json()).expect("and reads back from its JSON");
    }
});
