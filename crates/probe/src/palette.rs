//! The probe's colours. Every class has one flat colour, far from the others in RGB, so that
//! the checker can tell classes apart in a generated image by nearest colour alone.

use lina_csg::{Class, Colour};

pub type Rgb = [u8; 3];

pub const WALL: Rgb = [236, 232, 220];
pub const FLOOR: Rgb = [120, 120, 128];
pub const SHADOW: Rgb = [58, 58, 66];
pub const MIRROR: Rgb = [180, 214, 236];
pub const WATER: Rgb = [80, 150, 210];
pub const SAND: Rgb = [222, 190, 128];
pub const TABLE: Rgb = [140, 88, 48];
pub const JAR: Rgb = [168, 184, 196];
pub const LAMP: Rgb = [255, 250, 120];
pub const SKIN: Rgb = [244, 196, 160];
pub const SHIRT: Rgb = [236, 112, 24];

/// How much of the object's colour a reflection keeps; the rest is the surface's colour.
pub const REFLECTANCE: f32 = 0.6;

pub fn colour(c: Colour) -> Rgb {
    match c {
        Colour::Red => [200, 36, 36],
        Colour::Green => [36, 160, 60],
        Colour::Blue => [30, 50, 190],
        Colour::Yellow => [236, 206, 28],
        Colour::Purple => [140, 48, 172],
    }
}

/// The colour of background classes (those without a colour attribute).
pub fn class_colour(class: Class) -> Option<Rgb> {
    Some(match class {
        Class::Table => TABLE,
        Class::Floor => FLOOR,
        Class::Mirror => MIRROR,
        Class::Puddle | Class::Water => WATER,
        Class::Sand => SAND,
        Class::Jar => JAR,
        Class::Lamp => LAMP,
        Class::Shadow => SHADOW,
        Class::Person => SHIRT,
        _ => return None,
    })
}

/// An object's colour as seen in a reflecting surface.
pub fn reflected(object: Rgb, surface: Rgb) -> Rgb {
    std::array::from_fn(|i| {
        (REFLECTANCE * object[i] as f32 + (1.0 - REFLECTANCE) * surface[i] as f32).round() as u8
    })
}

pub fn distance2(a: Rgb, b: Rgb) -> u32 {
    (0..3)
        .map(|i| (a[i] as i32 - b[i] as i32).pow(2) as u32)
        .sum()
}
