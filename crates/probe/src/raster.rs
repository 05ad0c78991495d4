//! A tiny rasteriser: flat shapes painted in order, each pixel sampled at its centre, with no
//! anti-aliasing, so that every node's mask is exact.

use super::palette::Rgb;

/// An axis-aligned box in pixels, `x0..x1` by `y0..y1` (ends excluded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl Rect {
    pub fn new(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self { x0, y0, x1, y1 }
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Rect(Rect),
    Disc {
        cx: f32,
        cy: f32,
        r: f32,
    },
    /// An upright isosceles triangle with its apex at `(cx, top)` and its base on `bottom`.
    Triangle {
        cx: f32,
        top: f32,
        bottom: f32,
        half_width: f32,
    },
    /// An ellipse with its centre and radii.
    Ellipse {
        cx: f32,
        cy: f32,
        rx: f32,
        ry: f32,
    },
    /// Another shape mirrored about the horizontal line `y = axis`.
    FlippedY {
        shape: Box<Shape>,
        axis: f32,
    },
    /// Another shape moved by `(dx, dy)`.
    Moved {
        shape: Box<Shape>,
        dx: f32,
        dy: f32,
    },
}

impl Shape {
    pub fn contains(&self, x: f32, y: f32) -> bool {
        match self {
            Shape::Rect(r) => r.contains(x, y),
            Shape::Disc { cx, cy, r } => (x - cx).powi(2) + (y - cy).powi(2) <= r * r,
            Shape::Triangle {
                cx,
                top,
                bottom,
                half_width,
            } => {
                if y < *top || y >= *bottom {
                    return false;
                }
                let half = half_width * (y - top) / (bottom - top);
                (x - cx).abs() <= half
            }
            Shape::Ellipse { cx, cy, rx, ry } => {
                ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2) <= 1.0
            }
            Shape::FlippedY { shape, axis } => shape.contains(x, 2.0 * axis - y),
            Shape::Moved { shape, dx, dy } => shape.contains(x - dx, y - dy),
        }
    }
}

/// One painted shape: which CSG node it belongs to, and where it is clipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub node: usize,
    pub shape: Shape,
    pub colour: Rgb,
    pub clip: Option<Rect>,
    /// A node whose surface this item is painted on (a reflection on its mirror): the
    /// item's pixels count in that node's mask too.
    pub on_surface_of: Option<usize>,
}

impl Item {
    pub fn new(node: usize, shape: Shape, colour: Rgb) -> Self {
        Self {
            node,
            shape,
            colour,
            clip: None,
            on_surface_of: None,
        }
    }

    fn covers(&self, x: f32, y: f32) -> bool {
        self.clip.is_none_or(|c| c.contains(x, y)) && self.shape.contains(x, y)
    }
}

/// Paints `items` in order over `background`; returns the RGB pixels and, for each of
/// `nodes` nodes, a mask of the pixels it shows.
pub fn render(
    size: usize,
    background: &dyn Fn(f32, f32) -> Rgb,
    items: &[Item],
    nodes: usize,
) -> (Vec<u8>, Vec<Vec<bool>>) {
    let mut rgb = Vec::with_capacity(size * size * 3);
    let mut masks = vec![vec![false; size * size]; nodes];
    for py in 0..size {
        for px in 0..size {
            let (x, y) = (px as f32 + 0.5, py as f32 + 0.5);
            let top = items.iter().rev().find(|item| item.covers(x, y));
            let colour = match top {
                Some(item) => {
                    masks[item.node][py * size + px] = true;
                    if let Some(surface) = item.on_surface_of {
                        masks[surface][py * size + px] = true;
                    }
                    item.colour
                }
                None => background(x, y),
            };
            rgb.extend_from_slice(&colour);
        }
    }
    (rgb, masks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_items_cover_earlier_ones_and_masks_follow() {
        let items = [
            Item::new(0, Shape::Rect(Rect::new(0.0, 0.0, 4.0, 4.0)), [1, 1, 1]),
            Item::new(1, Shape::Rect(Rect::new(2.0, 0.0, 4.0, 4.0)), [2, 2, 2]),
        ];
        let (rgb, masks) = render(4, &|_, _| [0, 0, 0], &items, 2);
        assert_eq!(&rgb[0..3], &[1, 1, 1]);
        assert_eq!(&rgb[6..9], &[2, 2, 2]);
        assert_eq!(masks[0].iter().filter(|&&m| m).count(), 8);
        assert_eq!(masks[1].iter().filter(|&&m| m).count(), 8);
    }

    #[test]
    fn flipped_shape_mirrors_about_its_axis() {
        let disc = Shape::Disc {
            cx: 5.0,
            cy: 2.0,
            r: 1.0,
        };
        let flipped = Shape::FlippedY {
            shape: Box::new(disc),
            axis: 4.0,
        };
        assert!(flipped.contains(5.0, 6.0));
        assert!(!flipped.contains(5.0, 2.0));
    }
}
