//! The graph's distance: `1 - a.b` over shelf-types' SIMD inner product.

pub use shelf_types::vector::{dot, dot_portable};

/// Distance used inside the graph: `1 - a.b`, so smaller is closer and equal to cosine
/// distance for unit vectors.
#[inline]
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    1.0 - dot(a, b)
}
