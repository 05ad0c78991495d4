use super::*;
use crate::check::Verdict;
use crate::{Category, SceneId, Split};
use lina_csg::{Class, Light};

/// Repairs applied to the pixels of a broken render mend the checks they are for.
fn mended(category: Category, kinds: &[&str]) -> (usize, usize, usize) {
    let (mut broken, mut fixed, mut total) = (0, 0, 0);
    for index in 0..20 {
        let id = SceneId {
            split: Split::Ood,
            category,
            index,
        };
        let scene = id.broken_scene();
        let image = scene.render().image;
        let verdicts = check(&image, &scene.csg);
        let relevant = |v: &&Verdict| kinds.contains(&v.kind);
        let before = verdicts
            .iter()
            .filter(relevant)
            .filter(|v| !v.passed)
            .count();
        let (grid, edits) = edits_for(&image, &scene.csg, &verdicts);
        let after_image = edits.apply(&grid, 1.0).to_image();
        let after = check(&after_image, &scene.csg);
        let still = after.iter().filter(relevant).filter(|v| !v.passed).count();
        total += verdicts.iter().filter(relevant).count();
        broken += before;
        fixed += before.saturating_sub(still);
    }
    (broken, fixed, total)
}

#[test]
fn repairs_mend_the_probes_broken_renders() {
    for (category, kinds) in [
        (Category::Shadow, &["shadow_of"][..]),
        (Category::Reflection, &["bounded_by"]),
        (Category::Quantity, &["fill"]),
        (Category::Spatial, &["left_of", "right_of", "on"]),
        (Category::Support, &["on"]),
    ] {
        let (broken, fixed, total) = mended(category, kinds);
        assert!(
            broken > 0,
            "{category:?}: the broken renders break {kinds:?}"
        );
        assert!(
            fixed * 10 >= broken * 9,
            "{category:?}: {fixed} of {broken} broken {kinds:?} checks (of {total}) mended"
        );
    }
}

#[test]
fn a_correct_image_needs_no_repair() {
    for category in Category::ALL {
        let scene = SceneId {
            split: Split::Ood,
            category,
            index: 0,
        }
        .scene();
        let image = scene.render().image;
        let verdicts = check(&image, &scene.csg);
        let (_, edits) = edits_for(&image, &scene.csg, &verdicts);
        assert!(edits.is_empty(), "{category:?}: {:?}", edits.described);
    }
}

/// The repairs planned on an image's own pixels, with the image as a grid.
fn edits_for(image: &Image, csg: &Csg, verdicts: &[Verdict]) -> (Grid, Edits) {
    let grid = Grid::from_image(image);
    let edits = plan_edits(
        csg,
        &segment(image, csg),
        verdicts,
        &grid,
        &pixel_looks(csg),
    );
    (grid, edits)
}

/// Each node's flat colour as a pixel grid's cell holds it.
fn pixel_looks(csg: &Csg) -> Vec<Option<Vec<f32>>> {
    csg.nodes
        .iter()
        .map(|n| {
            n.colour.map(|c| {
                crate::palette::colour(c)
                    .iter()
                    .map(|&v| v as f32 / 255.0)
                    .collect()
            })
        })
        .collect()
}

#[test]
fn an_object_the_model_left_out_is_painted_where_the_graph_puts_it() {
    // The second object of a shadow scene, and the object on a small mirror, erased.
    for (category, id, wanted) in [
        (Category::Shadow, "object2", "exists(object2)"),
        (Category::Reflection, "object", "exists(object)"),
        (Category::Reflection, "object", "on(object, surface)"),
    ] {
        let mended = mends(category, wanted, |r, scene| {
            let node = scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
            erase(&r.image, &r.masks[node], 0)
        });
        assert!(mended >= 9, "{category:?}: {mended} of 10 {wanted} mended");
    }
}

/// `image` with the pixels of `mask` painted in their row's colour in `column` (the wall
/// or the floor there).
fn erase(image: &Image, mask: &[bool], column: usize) -> Image {
    let mut image = image.clone();
    let w = image.width;
    for (i, m) in mask.iter().enumerate() {
        if *m {
            let edge = 3 * (i / w * w + column);
            let wall: [u8; 3] = image.rgb[edge..edge + 3].try_into().unwrap();
            image.rgb[3 * i..3 * i + 3].copy_from_slice(&wall);
        }
    }
    image
}

/// `image` with `node`'s pixels moved `dx` pixels sideways; the pixels it leaves take
/// their row's colour in `column`.
fn shift(image: &Image, mask: &[bool], dx: isize, column: usize) -> Image {
    let mut out = erase(image, mask, column);
    let w = image.width as isize;
    for (i, m) in mask.iter().enumerate() {
        let x = i as isize % w + dx;
        if *m && (0..w).contains(&x) {
            let j = (i as isize + dx) as usize;
            out.rgb[3 * j..3 * j + 3].copy_from_slice(&image.rgb[3 * i..3 * i + 3]);
        }
    }
    out
}

/// The first ten `ood` scenes of `category` that have the check `check_name`, broken by
/// `breaking` (from the correct render and the scene): each must fail the check; returns
/// how many pass it after the repairs.
fn mends(
    category: Category,
    check_name: &str,
    breaking: impl Fn(&crate::Rendered, &crate::Scene) -> Image,
) -> usize {
    let (mut mended, mut tried) = (0, 0);
    for index in 0.. {
        if tried == 10 {
            break;
        }
        assert!(index < 200, "too few scenes with {check_name}");
        let scene = SceneId {
            split: Split::Ood,
            category,
            index,
        }
        .scene();
        let csg = &scene.csg;
        let rendered = scene.render();
        if !check(&rendered.image, csg)
            .iter()
            .any(|v| v.check == check_name)
        {
            continue;
        }
        tried += 1;
        let image = breaking(&rendered, &scene);
        let verdicts = check(&image, csg);
        assert!(
            verdicts.iter().any(|v| v.check == check_name && !v.passed),
            "scene {index}: the breaking does not break {check_name}"
        );
        let (grid, edits) = edits_for(&image, csg, &verdicts);
        let after = check(&edits.apply(&grid, 1.0).to_image(), csg);
        mended += after.iter().any(|v| v.check == check_name && v.passed) as usize;
    }
    mended
}

#[test]
fn an_object_drawn_in_another_outline_is_redrawn_in_its_own() {
    // A shadow scene's first object drawn as a disc (a cone or a cube) or as a box (a
    // ball), on the same base and as wide, in its own colour.
    for class in [Class::Cone, Class::Cube, Class::Ball] {
        let wanted = format!("shape(object1) = {}", class.word());
        let mended = mends(Category::Shadow, &wanted, |r, scene| {
            let node = scene
                .csg
                .nodes
                .iter()
                .position(|n| n.id == "object1")
                .unwrap();
            let mask = &r.masks[node];
            let pixels: Vec<usize> = (0..mask.len()).filter(|&i| mask[i]).collect();
            let (xs, ys) = (pixels.iter().map(|i| i % 64), pixels.iter().map(|i| i / 64));
            let (x0, x1) = (xs.clone().min().unwrap(), xs.max().unwrap());
            let (y0, y1) = (ys.clone().min().unwrap(), ys.max().unwrap());
            let side = (x1 - x0).max(y1 - y0) as f32 + 1.0;
            let (cx, cy) = ((x0 + x1 + 1) as f32 / 2.0, y1 as f32 + 1.0 - side / 2.0);
            let colour: [u8; 3] = r.image.rgb[3 * pixels[0]..3 * pixels[0] + 3]
                .try_into()
                .unwrap();
            let mut image = erase(&r.image, mask, 0);
            for i in 0..64 * 64 {
                let (px, py) = ((i % 64) as f32 + 0.5 - cx, (i / 64) as f32 + 0.5 - cy);
                let inside = if class == Class::Ball {
                    px.abs().max(py.abs()) <= side / 2.0
                } else {
                    px * px + py * py <= side * side / 4.0
                };
                if inside {
                    image.rgb[3 * i..3 * i + 3].copy_from_slice(&colour);
                }
            }
            image
        });
        assert!(mended >= 9, "{wanted}: {mended} of 10 mended");
    }
}

#[test]
fn a_front_object_drawn_apart_is_moved_over_the_hidden_one() {
    let node =
        |scene: &crate::Scene, id: &str| scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
    let mended = mends(Category::Occlusion, "behind(hidden, front)", |r, scene| {
        let (h, f) = (node(scene, "hidden"), node(scene, "front"));
        let centre = |m: &[bool]| {
            let xs: Vec<usize> = (0..m.len()).filter(|&i| m[i]).map(|i| i % 64).collect();
            xs.iter().sum::<usize>() as f32 / xs.len() as f32
        };
        // 16 pixels further from the hidden object.
        let away = if centre(&r.masks[f]) >= centre(&r.masks[h]) {
            16
        } else {
            -16
        };
        shift(&r.image, &r.masks[f], away, 0)
    });
    assert!(mended >= 9, "{mended} of 10 occlusions mended");
}

#[test]
fn water_is_brought_up_to_a_person_standing_too_far_from_it() {
    let mended = mends(Category::Spatial, "close_to(person, water)", |r, scene| {
        let node = |id: &str| scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
        let (person, water) = (node("person"), node("water"));
        let water_left = r.masks[water][63 * 64];
        // 14 pixels further into the sand; the vacated pixels take the sand's edge.
        let (away, column) = if water_left { (14, 63) } else { (-14, 0) };
        shift(&r.image, &r.masks[person], away, column)
    });
    assert!(
        mended >= 9,
        "{mended} of 10 people brought close to the water"
    );
}

#[test]
fn a_shadow_the_model_left_out_is_cast_away_from_the_light() {
    let wanted = "shadow_of(shadow_of_object2, object2)";
    let mended = mends(Category::Shadow, wanted, |r, scene| {
        let node = |id: &str| scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
        // The shadows fall left (the light is on the right): the right edge is bare floor.
        assert_eq!(scene.csg.light, Some(Light::Right));
        erase(
            &r.image,
            &r.masks[node("shadow_of_object2")],
            r.image.width - 1,
        )
    });
    assert!(mended >= 9, "{mended} of 10 missing shadows cast");
}

#[test]
fn a_missing_support_is_painted_under_what_stands_on_it() {
    let mended = mends(Category::Spatial, "on(top, bottom)", |r, scene| {
        let bottom = scene.csg.nodes.iter().position(|n| n.id == "bottom");
        erase(&r.image, &r.masks[bottom.unwrap()], 0)
    });
    assert!(
        mended >= 9,
        "{mended} of 10 stacks given their support back"
    );
}

#[test]
fn a_shadow_on_both_sides_keeps_the_far_one_and_loses_the_near_one() {
    let wanted = "shadow_of(shadow_of_object1, object1)";
    let mended = mends(Category::Shadow, wanted, |r, scene| {
        let node = |id: &str| scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
        let (object, shadow) = (
            &r.masks[node("object1")],
            &r.masks[node("shadow_of_object1")],
        );
        let w = r.image.width as isize;
        let xs: Vec<isize> = (0..object.len())
            .filter(|&i| object[i])
            .map(|i| i as isize % w)
            .collect();
        let axis2 = xs.iter().min().unwrap() + xs.iter().max().unwrap();
        // The light is on the right: the far side is the left. The shadow copied to the
        // near side, and half of it (a checkerboard) left on the far side.
        assert_eq!(scene.csg.light, Some(Light::Right));
        let mut image = r.image.clone();
        let mut paint = |j: usize, rgb: [u8; 3]| image.rgb[3 * j..3 * j + 3].copy_from_slice(&rgb);
        for i in (0..shadow.len()).filter(|&i| shadow[i]) {
            let (y, x) = (i as isize / w, i as isize % w);
            let j = (y * w + axis2 - x) as usize;
            if (0..w).contains(&(axis2 - x)) && !r.masks.iter().any(|m| m[j]) {
                paint(j, crate::palette::SHADOW);
            }
            if (x + y) % 2 == 0 {
                paint(i, crate::palette::FLOOR);
            }
        }
        image
    });
    assert!(mended >= 9, "{mended} of 10 two-sided shadows mended");
}

#[test]
fn a_second_colour_the_model_left_out_is_painted_on_the_spare_object() {
    // "a blue cube and a red ball lit from the right", drawn with both objects in the
    // first one's colour: the second is missing, the first counted twice.
    let mended = mends(Category::Shadow, "exists(object2)", |r, scene| {
        let node = |id: &str| scene.csg.nodes.iter().position(|n| n.id == id).unwrap();
        let first = scene.csg.nodes[node("object1")].colour.unwrap();
        let colour = crate::palette::colour(first);
        let mut image = r.image.clone();
        for (i, m) in r.masks[node("object2")].iter().enumerate() {
            if *m {
                image.rgb[3 * i..3 * i + 3].copy_from_slice(&colour);
            }
        }
        image
    });
    assert!(mended >= 9, "{mended} of 10 missing objects painted back");
}

#[test]
fn edits_move_cells_by_the_strength() {
    let grid = Grid {
        channels: 1,
        height: 1,
        width: 2,
        data: vec![1.0, 2.0],
    };
    let mut edits = Edits::new(&grid);
    edits.set(0, 1, vec![4.0]);
    assert_eq!(edits.delta(&grid, 0.5), vec![0.0, 1.0]);
    assert_eq!(edits.apply(&grid, 1.0).data, vec![1.0, 4.0]);
}
