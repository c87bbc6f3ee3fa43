//! A dense sentence embedding: an L2-normalised f32 vector.

use serde::{Deserialize, Serialize};

/// A dense vector produced by an embedding model. Vectors from shelf-embed are
/// L2-normalised, so the dot product of two of them is their cosine similarity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Embedding(pub Vec<f32>);

impl Embedding {
    /// Number of dimensions.
    pub fn dim(&self) -> usize {
        self.0.len()
    }

    /// The components.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Dot product; the cosine similarity when both vectors are normalised.
    ///
    /// # Panics
    /// When the dimensions differ (a programming error: check `dim()` at the boundary).
    pub fn dot(&self, other: &Embedding) -> f32 {
        assert_eq!(
            self.dim(),
            other.dim(),
            "dot of vectors with different dimensions"
        );
        self.0.iter().zip(&other.0).map(|(a, b)| a * b).sum()
    }

    /// Cosine similarity, for vectors that may not be normalised. 0 when either is zero.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        let norms = self.norm() * other.norm();
        if norms == 0.0 {
            0.0
        } else {
            self.dot(other) / norms
        }
    }

    /// Euclidean norm.
    pub fn norm(&self) -> f32 {
        self.0.iter().map(|x| x * x).sum::<f32>().sqrt()
    }

    /// Whether every component is finite (no NaN, no infinity).
    pub fn is_finite(&self) -> bool {
        self.0.iter().all(|x| x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_and_dot() {
        let a = Embedding(vec![3.0, 4.0]);
        let b = Embedding(vec![4.0, 3.0]);
        assert_eq!(a.norm(), 5.0);
        assert!((a.cosine(&b) - 24.0 / 25.0).abs() < 1e-6);
        assert_eq!(a.cosine(&Embedding(vec![0.0, 0.0])), 0.0);
        assert!(!Embedding(vec![f32::NAN]).is_finite());
    }
}
