//! Vector checks, normalisation and the inner-product kernel shared by exact and graph search.

use crate::IndexError;

/// Checks dimension and values, then returns `vector` scaled to unit length.
pub fn normalized(vector: &[f32], dim: usize) -> Result<Vec<f32>, IndexError> {
    if vector.len() != dim {
        return Err(IndexError::DimensionMismatch {
            expected: dim,
            received: vector.len(),
        });
    }
    if let Some((position, &value)) = vector.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(IndexError::NonFinite { position, value });
    }
    shelf_types::vector::unit_vector(vector).ok_or(IndexError::ZeroVector)
}

/// Cosine similarity of two unit vectors, with the same SIMD kernel the graph uses.
#[inline]
pub fn similarity(a: &[f32], b: &[f32]) -> f32 {
    crate::graph::dot(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects_bad_vectors() {
        let v = normalized(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(matches!(
            normalized(&[1.0; 3], 2),
            Err(IndexError::DimensionMismatch {
                expected: 2,
                received: 3
            })
        ));
        assert!(matches!(
            normalized(&[1.0, f32::NAN], 2),
            Err(IndexError::NonFinite { position: 1, .. })
        ));
        assert!(matches!(
            normalized(&[0.0, 0.0], 2),
            Err(IndexError::ZeroVector)
        ));
        assert!((similarity(&v, &v) - 1.0).abs() < 1e-5);
    }
}
