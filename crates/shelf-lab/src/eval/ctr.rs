//! `shelf eval ctr` and its demo data: the ranker's click prediction on logged impressions.

use super::*;

#[derive(Debug, Args)]
pub struct DemoDataArgs {
    /// Directory to write `items.jsonl` and `interactions.tsv` into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Products in the shop.
    #[arg(long, default_value_t = 2_000)]
    pub items: usize,
    /// Shoppers.
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// Sessions per shopper.
    #[arg(long, default_value_t = 20)]
    pub sessions: usize,
    /// Seed of the shop, the shoppers and their sessions.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct CtrArgs {
    #[command(flatten)]
    pub data: shelf_cli::data::DataArgs,
    /// Newest share of the shown items held out for evaluation.
    #[arg(long, default_value_t = 0.2)]
    pub held_out_share: f64,
}

pub(super) fn demo_data(args: DemoDataArgs) -> anyhow::Result<()> {
    use crate::demo::{shop::Shop, users};
    use std::io::Write;
    anyhow::ensure!(
        args.items > 0 && args.users > 0,
        "--items and --users must be positive"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let shop = Shop::generate(args.items, args.seed);
    let shoppers = users::users(args.users, args.seed + 1);
    let log = users::browsing_log(&shop, &shoppers, args.sessions, args.seed + 2);
    let write = |name: &str, body: &dyn Fn(&mut dyn Write) -> std::io::Result<()>| {
        let path = args.out.join(name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        body(&mut file)?;
        file.flush()?;
        anyhow::Ok(())
    };
    write("items.jsonl", &|out| {
        for p in &shop.products {
            writeln!(out, "{}", serde_json::to_string(&p.item)?)?;
        }
        Ok(())
    })?;
    write("interactions.tsv", &|out| {
        writeln!(out, "user_id\titem_id\tkind\tts")?;
        for x in &log {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                x.user_id, x.item_id, x.kind, x.ts_secs
            )?;
        }
        Ok(())
    })?;
    eprintln!(
        "wrote {} items and {} interactions of {} shoppers to {}",
        shop.products.len(),
        log.len(),
        shoppers.len(),
        args.out.display()
    );
    Ok(())
}

/// AUC and log-loss on the held-out newest impressions. The prior's scores are not
/// probabilities, so it has no log-loss. A model trained after those impressions were
/// logged has seen them: compare models on impressions newer than their training.
pub(super) fn ctr(args: CtrArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.held_out_share > 0.0 && args.held_out_share < 1.0,
        "--held-out-share must be between 0 and 1"
    );
    let store = args.data.open_store_read_only()?;
    let mut examples = shelf_node::models::examples(&store)?;
    examples.sort_by_key(|e| e.ts_ms);
    let split = ((examples.len() as f64) * (1.0 - args.held_out_share)).round() as usize;
    let held_out = &examples[split..];
    let labels: Vec<bool> = held_out.iter().map(|e| e.clicked).collect();
    let clicks = labels.iter().filter(|c| **c).count();
    anyhow::ensure!(
        clicks > 0 && clicks < labels.len(),
        "the held-out impressions ({} shown items, {clicks} clicked) need clicks and non-clicks",
        labels.len()
    );
    let groups: Vec<u64> = held_out.iter().map(|e| e.request).collect();
    let positions: Vec<u32> = held_out.iter().map(|e| e.position).collect();
    let clicks_ndcg = |scores: &[f32]| shelf_rank::clicks_ndcg_at(10, scores, &labels, &groups);
    let matched_auc = |scores: &[f32]| {
        shelf_rank::position_matched_auc(scores, &labels, &positions).unwrap_or(0.5)
    };
    let prior = PriorRanker::default();
    let prior_scores: Vec<f32> = held_out.iter().map(|e| prior.score(&e.features)).collect();
    let mut rows = vec![(
        "prior".to_string(),
        shelf_rank::auc(&prior_scores, &labels).unwrap_or(0.5),
        matched_auc(&prior_scores),
        None,
        clicks_ndcg(&prior_scores),
    )];
    for model in shelf_node::models::list(&args.data.data_dir)? {
        let scores: Vec<f32> = held_out.iter().map(|e| model.score(&e.features)).collect();
        let probabilities: Vec<f32> = held_out
            .iter()
            .map(|e| model.probability(&e.features, e.position))
            .collect();
        rows.push((
            model.version.clone(),
            shelf_rank::auc(&scores, &labels).unwrap_or(0.5),
            matched_auc(&scores),
            Some(shelf_rank::log_loss(&probabilities, &labels)),
            clicks_ndcg(&scores),
        ));
    }
    eprintln!(
        "{:<28} {:>7} {:>11} {:>9} {:>14}   ({} held-out shown items, {clicks} clicked)",
        "model",
        "AUC",
        "matched AUC",
        "log-loss",
        "clicks NDCG@10",
        labels.len()
    );
    for (name, auc, matched, loss, ndcg) in &rows {
        let loss_text = loss.map_or("—".to_string(), |l| format!("{l:.4}"));
        let ndcg_text = ndcg.map_or("—".to_string(), |n| format!("{n:.4}"));
        eprintln!("{name:<28} {auc:>7.4} {matched:>11.4} {loss_text:>9} {ndcg_text:>14}");
        println!(
            "{}",
            serde_json::json!({"model": name, "auc": auc, "position_matched_auc": matched,
                               "log_loss": loss,
                               "clicks_ndcg_at_10": ndcg,
                               "held_out": labels.len(), "clicks": clicks})
        );
    }
    Ok(())
}
