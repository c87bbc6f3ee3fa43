//! Gradient-boosted regression trees as a saved model: the trees, how a candidate is scored
//! (optionally on top of the hand-set prior), and how a score is attributed to the inputs.

use crate::learned::INPUT_COUNT;
use serde::{Deserialize, Serialize};

/// One regression tree, its nodes in parallel arrays (node 0 is the root). An inner node
/// sends `x[input] <= threshold` to `left`, the rest to `right`; a leaf has `left == 0` (the
/// root is nobody's child).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub input: Vec<u16>,
    pub threshold: Vec<f32>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// A leaf's output; an inner node's is the output it would have had as a leaf (the
    /// Newton step over all its training rows), which explanations attribute from.
    pub value: Vec<f32>,
}

impl Tree {
    /// The leaf `x` falls in.
    fn leaf(&self, x: &[f32; INPUT_COUNT]) -> usize {
        let mut node = 0;
        while self.left[node] != 0 {
            node = if x[self.input[node] as usize] <= self.threshold[node] {
                self.left[node] as usize
            } else {
                self.right[node] as usize
            };
        }
        node
    }

    /// The tree's output for `x`.
    pub fn output(&self, x: &[f32; INPUT_COUNT]) -> f32 {
        self.value[self.leaf(x)]
    }

    /// Adds to `contributions` each split's change of value along `x`'s path, to the input
    /// it split on (Saabas' attribution), and returns the root's value: the root's value
    /// plus the changes is the output.
    pub fn attribute(&self, x: &[f32; INPUT_COUNT], contributions: &mut [f32; INPUT_COUNT]) -> f32 {
        let mut node = 0;
        while self.left[node] != 0 {
            let input = self.input[node] as usize;
            let next = if x[input] <= self.threshold[node] {
                self.left[node]
            } else {
                self.right[node]
            } as usize;
            contributions[input] += self.value[next] - self.value[node];
            node = next;
        }
        self.value[0]
    }

    /// Refuses a tree that could index out of bounds or loop: every child lies after its
    /// parent and inside the arrays, every input exists, every number is finite.
    pub fn check(&self) -> Result<(), String> {
        let n = self.value.len();
        if n == 0
            || [
                self.input.len(),
                self.threshold.len(),
                self.left.len(),
                self.right.len(),
            ]
            .iter()
            .any(|&len| len != n)
        {
            return Err("a tree's node arrays are empty or of different lengths".into());
        }
        for node in 0..n {
            if !self.value[node].is_finite() {
                return Err(format!("tree node {node} has a value that is not finite"));
            }
            if self.left[node] == 0 {
                continue;
            }
            let children = [self.left[node] as usize, self.right[node] as usize];
            if children.iter().any(|&c| c <= node || c >= n)
                || self.input[node] as usize >= INPUT_COUNT
                || !self.threshold[node].is_finite()
            {
                return Err(format!("tree node {node} has a bad split or children"));
            }
        }
        Ok(())
    }
}

/// The forest's parameters: `logit = base + prior_scale * prior(x) + Σ tree(x)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub base: f32,
    /// Weight of the hand-set prior's score that the trees were boosted from (0: from
    /// nothing).
    pub prior_scale: f32,
    /// The prior's weights when training ran, indexed like the ranking features (the
    /// prior may change between releases; the model keeps what it learned on top of).
    pub prior_weights: Vec<f32>,
    pub trees: Vec<Tree>,
}

impl Forest {
    pub fn prior_score(&self, x: &[f32; INPUT_COUNT]) -> f32 {
        if self.prior_scale == 0.0 {
            return 0.0;
        }
        self.prior_scale
            * self
                .prior_weights
                .iter()
                .zip(x)
                .map(|(w, v)| w * v)
                .sum::<f32>()
    }

    pub fn logit(&self, x: &[f32; INPUT_COUNT]) -> f32 {
        self.trees
            .iter()
            .fold(self.base + self.prior_score(x), |sum, t| sum + t.output(x))
    }

    /// The logits of many inputs, tree by tree: each tree's nodes stay in cache while every
    /// input walks it (the same sums as `logit`, added in the same order).
    pub fn logits(&self, xs: &[[f32; INPUT_COUNT]]) -> Vec<f32> {
        let mut out: Vec<f32> = xs.iter().map(|x| self.base + self.prior_score(x)).collect();
        for tree in &self.trees {
            for (o, x) in out.iter_mut().zip(xs) {
                *o += tree.output(x);
            }
        }
        out
    }

    /// Per input, its share of the logit (the prior's terms plus the trees' path
    /// attributions), and the bias: `base` plus the trees' root values. They sum to the
    /// logit.
    pub fn attribute(&self, x: &[f32; INPUT_COUNT]) -> ([f32; INPUT_COUNT], f32) {
        let mut contributions = [0.0; INPUT_COUNT];
        for (c, (w, v)) in contributions
            .iter_mut()
            .zip(self.prior_weights.iter().zip(x))
        {
            *c = self.prior_scale * w * v;
        }
        let mut bias = self.base;
        for tree in &self.trees {
            bias += tree.attribute(x, &mut contributions);
        }
        (contributions, bias)
    }

    pub fn check(&self) -> Result<(), String> {
        if self.prior_weights.len() > INPUT_COUNT
            || !self.base.is_finite()
            || !self.prior_scale.is_finite()
            || self.prior_weights.iter().any(|w| !w.is_finite())
        {
            return Err("the forest's base or prior weights are malformed".into());
        }
        self.trees.iter().try_for_each(Tree::check)
    }

    /// The forest with its inputs renumbered (`to[old] = new`) for a newer input schema.
    pub fn renumbered(mut self, to: &[usize]) -> Result<Self, String> {
        self.check()?;
        for tree in &mut self.trees {
            for (node, input) in tree.input.iter_mut().enumerate() {
                if tree.left[node] != 0 {
                    let new = to
                        .get(*input as usize)
                        .ok_or_else(|| format!("tree input {input} is not in the old schema"))?;
                    *input = *new as u16;
                }
            }
        }
        let mut weights = vec![0.0; INPUT_COUNT];
        for (old, w) in self.prior_weights.iter().enumerate() {
            if let Some(&new) = to.get(old) {
                weights[new] = *w;
            }
        }
        self.prior_weights = weights;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A depth-2 tree over inputs 0 and 1.
    fn tree() -> Tree {
        Tree {
            input: vec![0, 1, 0, 0, 0],
            threshold: vec![0.5, 0.2, 0.0, 0.0, 0.0],
            left: vec![1, 3, 0, 0, 0],
            right: vec![2, 4, 0, 0, 0],
            value: vec![0.1, -0.2, 0.6, -0.5, 0.3],
        }
    }

    #[test]
    fn a_tree_routes_and_its_attributions_sum_to_the_logit() {
        let forest = Forest {
            base: -1.0,
            prior_scale: 0.5,
            prior_weights: vec![2.0, 1.0],
            trees: vec![tree(), tree()],
        };
        let mut x = [0.0; INPUT_COUNT];
        x[0] = 0.3;
        x[1] = 0.1;
        // 0.3 <= 0.5: left to node 1; 0.1 <= 0.2: left to leaf 3.
        assert_eq!(tree().output(&x), -0.5);
        x[1] = 0.9;
        assert_eq!(tree().output(&x), 0.3);
        x[0] = 0.7;
        assert_eq!(tree().output(&x), 0.6);
        // In bulk, tree by tree, the same logits to the bit.
        let mut other = x;
        other[0] = 0.2;
        let bulk = forest.logits(&[x, other]);
        assert_eq!(bulk, vec![forest.logit(&x), forest.logit(&other)]);
        let (contributions, bias) = forest.attribute(&x);
        let sum: f32 = contributions.iter().sum::<f32>() + bias;
        assert!((sum - forest.logit(&x)).abs() < 1e-6);
        // Input 0 took the root's split (0.1 -> 0.6, twice) and its prior term.
        assert!((contributions[0] - (1.0 + 0.5 * 2.0 * 0.7)).abs() < 1e-6);
        assert!((bias - (-1.0 + 0.2)).abs() < 1e-6);
    }

    #[test]
    fn malformed_trees_are_refused() {
        assert!(tree().check().is_ok());
        let mut cycle = tree();
        cycle.left[1] = 0;
        cycle.right[1] = 0;
        cycle.left[2] = 1;
        assert!(cycle.check().is_err());
        let mut outside = tree();
        outside.right[0] = 9;
        assert!(outside.check().is_err());
        let mut input = tree();
        input.input[0] = INPUT_COUNT as u16;
        assert!(input.check().is_err());
        let mut short = tree();
        short.threshold.pop();
        assert!(short.check().is_err());
        let mut nan = tree();
        nan.value[3] = f32::NAN;
        assert!(nan.check().is_err());
    }
}
