//! shelf-lab: the tools for measuring shelf rather than serving with it: the demo shop and
//! its simulated shoppers, the benchmarks (`shelf bench`), and offline evaluation with its
//! baselines (`shelf eval`).

pub mod baselines;
pub mod bench;
pub mod demo;
pub mod eval;
