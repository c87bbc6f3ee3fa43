//! Seeded synthetic vectors for tests and benches: clustered unit vectors, like real
//! sentence embeddings (uniform random vectors are the unrepresentative worst case).

/// A small seeded generator (splitmix64); enough for fixtures, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Unit vectors around `clusters` random centres; `spread` is the noise norm relative to
/// the centre (0.8 gives neighbour similarities of about 0.6, like MiniLM on a catalog).
#[derive(Clone, Debug)]
pub struct Clustered {
    centres: Vec<Vec<f64>>,
    spread: f64,
    rng: Rng,
}

impl Clustered {
    pub fn new(dim: usize, clusters: usize, spread: f64, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let centres = (0..clusters.max(1))
            .map(|_| unit((0..dim).map(|_| rng.normal()).collect()))
            .collect();
        Self {
            centres,
            spread,
            rng,
        }
    }

    /// The next vector and the cluster it was drawn from.
    pub fn sample(&mut self) -> (Vec<f32>, usize) {
        let cluster = self.rng.below(self.centres.len());
        let dim = self.centres[cluster].len();
        let sigma = self.spread / (dim as f64).sqrt();
        let point = self.centres[cluster]
            .iter()
            .map(|c| c + sigma * self.rng.normal())
            .collect();
        (unit(point).into_iter().map(|v| v as f32).collect(), cluster)
    }

    /// `n` vectors.
    pub fn take(&mut self, n: usize) -> Vec<Vec<f32>> {
        (0..n).map(|_| self.sample().0).collect()
    }
}

fn unit(v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// The exact top `k` of `query` among `base` by inner product, best first (ground truth).
pub fn exact_top_k(
    base: &[Vec<f32>],
    query: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = base
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, v)| (crate::vector::similarity(v, query), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored.into_iter().map(|(_, i)| i).collect()
}
