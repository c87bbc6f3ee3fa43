//! Collaborative baselines for `shelf eval interactions`, computed in-process on the
//! replayed training interactions: item-kNN (cosine on the binary user-item matrix) and
//! EASE (Steck 2019, a closed-form linear item-item model).

use rayon::prelude::*;
use std::collections::HashMap;

/// The binary user-item matrix of the training interactions: each user's distinct items
/// as dense item indices.
#[derive(Debug)]
pub struct Interactions {
    pub items: Vec<String>,
    index: HashMap<String, u32>,
    users: HashMap<String, Vec<u32>>,
}

impl Interactions {
    /// From `(user, item)` pairs (repeats count once).
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut items = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut users: HashMap<String, Vec<u32>> = HashMap::new();
        for (user, item) in pairs {
            let next = index.len() as u32;
            let i = *index.entry(item.to_string()).or_insert_with(|| {
                items.push(item.to_string());
                next
            });
            let row = users.entry(user.to_string()).or_default();
            if !row.contains(&i) {
                row.push(i);
            }
        }
        Self {
            items,
            index,
            users,
        }
    }

    /// The items of `user` (dense indices).
    pub fn row(&self, user: &str) -> &[u32] {
        self.users.get(user).map_or(&[], Vec::as_slice)
    }

    /// The `k` highest-scoring items outside the user's row, best first (ties by id).
    pub fn top_unseen(&self, user: &str, scores: &[f64], k: usize) -> Vec<String> {
        let row = self.row(user);
        let mut ranked: Vec<(u32, f64)> = scores
            .iter()
            .enumerate()
            .filter(|(i, s)| **s > 0.0 && !row.contains(&(*i as u32)))
            .map(|(i, s)| (i as u32, *s))
            .collect();
        ranked.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.items[a.0 as usize].cmp(&self.items[b.0 as usize]))
        });
        ranked
            .into_iter()
            .take(k)
            .map(|(i, _)| self.items[i as usize].clone())
            .collect()
    }

    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }
}

/// Item-kNN: for each item its `neighbours` most similar items by cosine of the binary
/// user-item columns (`|U_i ∩ U_j| / sqrt(|U_i| |U_j|)`); a user's score of an item is the
/// sum of its similarities to the user's items among their neighbour lists.
#[derive(Debug)]
pub struct ItemKnn {
    neighbours: Vec<Vec<(u32, f64)>>,
}

impl ItemKnn {
    pub fn fit(data: &Interactions, neighbours: usize) -> Self {
        let n = data.items.len();
        let mut counts = vec![0u32; n];
        let mut co: Vec<HashMap<u32, u32>> = vec![HashMap::new(); n];
        for row in data.users.values() {
            for &i in row {
                counts[i as usize] += 1;
                for &j in row {
                    if i != j {
                        *co[i as usize].entry(j).or_default() += 1;
                    }
                }
            }
        }
        let neighbours = co
            .into_par_iter()
            .enumerate()
            .map(|(i, row)| {
                let mut sims: Vec<(u32, f64)> = row
                    .into_iter()
                    .map(|(j, c)| {
                        let norm = (f64::from(counts[i]) * f64::from(counts[j as usize])).sqrt();
                        (j, f64::from(c) / norm)
                    })
                    .collect();
                sims.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                sims.truncate(neighbours);
                sims
            })
            .collect();
        Self { neighbours }
    }

    /// Scores of every item for a user with `row`.
    pub fn scores(&self, row: &[u32]) -> Vec<f64> {
        let mut scores = vec![0.0; self.neighbours.len()];
        for &i in row {
            for &(j, sim) in &self.neighbours[i as usize] {
                scores[j as usize] += sim;
            }
        }
        scores
    }
}

/// EASE: `B = I - P / diag(P)` with `P = (XᵀX + λI)⁻¹` and a zero diagonal; a user's
/// scores are their row of `X` times `B`. Holds `P` densely (8 n² bytes).
pub struct Ease {
    n: usize,
    /// `P`, row-major.
    p: Vec<f64>,
}

impl std::fmt::Debug for Ease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ease").field("n", &self.n).finish()
    }
}

impl Ease {
    /// The most items `fit` accepts by default: the dense inverse takes 8 n² bytes
    /// (800 MB at 10,000) and O(n³) time.
    pub const DEFAULT_MAX_ITEMS: usize = 10_000;

    pub fn fit(data: &Interactions, lambda: f64, max_items: usize) -> anyhow::Result<Self> {
        let n = data.items.len();
        anyhow::ensure!(
            n <= max_items,
            "EASE needs a dense {n}×{n} inverse ({:.1} GiB, O(n³) time); the catalogue's \
             {n} interacted items are more than --ease-max-items {max_items}",
            (8 * n * n) as f64 / (1u64 << 30) as f64
        );
        anyhow::ensure!(lambda > 0.0, "--ease-lambda must be positive");
        let mut g = vec![0.0f64; n * n];
        for row in data.users.values() {
            for &i in row {
                let gi = &mut g[i as usize * n..(i as usize + 1) * n];
                for &j in row {
                    gi[j as usize] += 1.0;
                }
            }
        }
        for i in 0..n {
            g[i * n + i] += lambda;
        }
        invert_spd(&mut g, n);
        Ok(Self { n, p: g })
    }

    /// Scores of every item for a user with `row`: `-Σ_{i∈row} P_ij / P_jj`, 0 on the row.
    pub fn scores(&self, row: &[u32]) -> Vec<f64> {
        let n = self.n;
        let mut scores = vec![0.0; n];
        for &i in row {
            let pi = &self.p[i as usize * n..(i as usize + 1) * n];
            for (s, p) in scores.iter_mut().zip(pi) {
                *s -= p;
            }
        }
        for (j, s) in scores.iter_mut().enumerate() {
            *s /= self.p[j * n + j];
        }
        for &i in row {
            scores[i as usize] = 0.0;
        }
        scores
    }
}

/// Inverts a symmetric positive definite `n×n` row-major matrix in place (Gauss-Jordan;
/// positive definiteness makes every pivot positive, so no pivoting is needed).
fn invert_spd(a: &mut [f64], n: usize) {
    for k in 0..n {
        let pivot = a[k * n + k];
        let mut row_k: Vec<f64> = a[k * n..(k + 1) * n].iter().map(|x| x / pivot).collect();
        row_k[k] = 1.0 / pivot;
        a.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            if i == k {
                row.copy_from_slice(&row_k);
                return;
            }
            let f = row[k];
            if f == 0.0 {
                return;
            }
            for (x, r) in row.iter_mut().zip(&row_k) {
                *x -= f * r;
            }
            row[k] = -f / pivot;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inversion_matches_a_known_inverse() {
        // [[4, 1], [1, 3]]⁻¹ = [[3, -1], [-1, 4]] / 11
        let mut a = vec![4.0, 1.0, 1.0, 3.0];
        invert_spd(&mut a, 2);
        let want = [3.0 / 11.0, -1.0 / 11.0, -1.0 / 11.0, 4.0 / 11.0];
        for (x, w) in a.iter().zip(want) {
            assert!((x - w).abs() < 1e-12, "{a:?}");
        }
        // A bigger one: A · A⁻¹ = I.
        let n = 30;
        let mut m = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                m[i * n + j] =
                    1.0 / (1.0 + (i as f64 - j as f64).abs()) + if i == j { n as f64 } else { 0.0 };
            }
        }
        let mut inv = m.clone();
        invert_spd(&mut inv, n);
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| m[i * n + k] * inv[k * n + j]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-9);
            }
        }
    }

    fn data() -> Interactions {
        // a and b always together; c with d; e alone with a once.
        Interactions::new([
            ("u1", "a"),
            ("u1", "b"),
            ("u2", "a"),
            ("u2", "b"),
            ("u3", "c"),
            ("u3", "d"),
            ("u4", "a"),
            ("u4", "b"),
            ("u4", "e"),
            ("u5", "a"),
        ])
    }

    #[test]
    fn item_knn_recommends_what_is_seen_together() {
        let data = data();
        let knn = ItemKnn::fit(&data, 100);
        let scores = knn.scores(data.row("u5"));
        assert_eq!(data.top_unseen("u5", &scores, 2), ["b", "e"]);
        let b = data.item_index("b").unwrap() as usize;
        // cos(a, b) = 3 / sqrt(4 * 3)
        assert!((scores[b] - 3.0 / 12f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            data.top_unseen("u3", &knn.scores(data.row("u3")), 5),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ease_recommends_what_is_seen_together_and_refuses_big_catalogues() {
        let data = data();
        let ease = Ease::fit(&data, 0.5, 100).unwrap();
        let scores = ease.scores(data.row("u5"));
        assert_eq!(data.top_unseen("u5", &scores, 1), ["b"]);
        assert_eq!(scores[data.item_index("a").unwrap() as usize], 0.0);
        let err = Ease::fit(&data, 0.5, 4).err().unwrap().to_string();
        assert!(err.contains("--ease-max-items 4"), "{err}");
    }
}
