//! `shelf train`: train a CTR model on the logged impressions and promote it when it is
//! not worse than the live one (a running `shelf serve` swaps it in within seconds).

use crate::data::DataArgs;
use clap::{Args, ValueEnum};
use shelf_rank::{ModelKind, Objective, TrainConfig, TreeSettings};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Kind {
    Logistic,
    /// One hidden layer of ReLU units.
    Mlp,
    /// Gradient-boosted regression trees (LambdaMART with `--objective lambdarank`).
    Trees,
}

impl Kind {
    /// The model with the given sizes: `hidden` units for the MLP; trees of `depth`,
    /// boosted from `boost_from`.
    pub fn model(self, hidden: u32, depth: u32, boost_from: BoostFrom) -> ModelKind {
        match self {
            Kind::Logistic => ModelKind::Logistic,
            Kind::Mlp => ModelKind::Mlp {
                hidden: hidden as usize,
            },
            Kind::Trees => ModelKind::Trees(TreeSettings {
                depth: depth as usize,
                from_prior: matches!(boost_from, BoostFrom::Prior),
            }),
        }
    }

    /// The model with the default sizes (16 hidden units; trees of depth 6 boosted from the
    /// prior).
    pub fn with_default_sizes(self) -> ModelKind {
        self.model(16, 6, BoostFrom::Prior)
    }
}

/// What the trees' scores start from.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BoostFrom {
    /// The hand-set prior's score: the trees learn corrections to it.
    Prior,
    /// A constant: the trees learn the whole score.
    Constant,
}

/// The objectives `--objective` takes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ObjectiveArg {
    /// Binary cross-entropy per shown item (a calibrated click probability); the epoch
    /// kept has the best position-matched validation AUC.
    Pointwise,
    /// LambdaRank: pairs within a response, weighted by their NDCG change; the epoch kept
    /// has the best validation clicks NDCG@10.
    Lambdarank,
}

impl From<ObjectiveArg> for Objective {
    fn from(arg: ObjectiveArg) -> Self {
        match arg {
            ObjectiveArg::Pointwise => Objective::Pointwise,
            ObjectiveArg::Lambdarank => Objective::LambdaRank,
        }
    }
}

/// Flags of `shelf train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Model to train.
    #[arg(long, value_enum, default_value = "logistic")]
    pub model: Kind,
    /// What training minimises.
    #[arg(long, value_enum, default_value = "pointwise")]
    pub objective: ObjectiveArg,
    /// Hidden units of the MLP.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub hidden: u32,
    /// Most splits from a tree's root to a leaf (--model trees).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=12))]
    pub depth: u32,
    /// What the trees' scores start from (--model trees).
    #[arg(long, value_enum, default_value = "prior")]
    pub boost_from: BoostFrom,
    /// Most passes over the training examples, or trees (early stopping usually ends
    /// sooner) [default: 60; trees: 500].
    #[arg(long)]
    pub max_epochs: Option<usize>,
    /// Epochs (trees) without a better validation score (position-matched AUC, or clicks
    /// NDCG@10 with --objective lambdarank) before stopping [default: 15; trees: 50].
    #[arg(long)]
    pub patience: Option<usize>,
    /// AdamW learning rate, or the trees' shrinkage [default: 0.02; trees: 0.1].
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Newest share of examples held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub validation_share: f64,
    /// Fewest examples (shown items) to train on.
    #[arg(long, default_value_t = 1000)]
    pub min_examples: usize,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.validation_share > 0.0 && args.validation_share < 1.0,
        "--validation-share must be between 0 and 1"
    );
    if let Some(rate) = args.learning_rate {
        anyhow::ensure!(
            rate > 0.0 && rate.is_finite(),
            "--learning-rate must be positive"
        );
    }
    let store = args.data.open_store_read_only()?;
    let defaults =
        TrainConfig::for_model(args.model.model(args.hidden, args.depth, args.boost_from));
    let config = TrainConfig {
        objective: args.objective.into(),
        max_epochs: args.max_epochs.unwrap_or(defaults.max_epochs).max(1),
        patience: args.patience.unwrap_or(defaults.patience).max(1),
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        validation_share: args.validation_share,
        seed: args.seed,
        ..defaults
    };
    eprintln!(
        "training on the impressions in {}",
        args.data.data_dir.display()
    );
    let outcome = shelf_node::models::train_and_promote(
        &args.data.data_dir,
        &store,
        &config,
        args.min_examples,
    )?;
    let r = &outcome.model.report;
    eprintln!(
        "{} ({:?}): position-matched validation AUC {:.4} (prior {:.4}, live before: {} {:.4}), clicks NDCG@10 {:.4} (prior {:.4}), plain AUC {:.4} (prior {:.4}), log-loss {:.4}, {} train / {} validation examples, best epoch {} of {}; {}",
        outcome.model.version,
        r.objective,
        r.validation_position_matched_auc,
        r.prior_validation_position_matched_auc,
        outcome.incumbent,
        outcome.incumbent_position_matched_auc,
        r.validation_clicks_ndcg_at_10,
        r.prior_validation_clicks_ndcg_at_10,
        r.validation_auc,
        r.prior_validation_auc,
        r.validation_log_loss,
        r.train_examples,
        r.validation_examples,
        r.best_epoch,
        r.epochs_run,
        if outcome.promoted { "promoted to live" } else { "not promoted (worse than the live model)" }
    );
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
