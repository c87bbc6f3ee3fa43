//! `shelf eval languages`: search across languages on the demo shop. The same products are
//! generated in English and in Chinese, and each shopper query exists in both languages
//! (the same random draws, translated). Every query is run in each language against each
//! catalogue: semantic search (the model) and lexical search (BM25; on Chinese text with
//! each way of splitting it), scored by NDCG@k against the shop's own relevance (the
//! query's category, and its colour when it names one) and by how many of the English
//! query's top k on the English catalogue each run shares.

use super::*;
use crate::demo::shop::{Language, Shop, COLORS};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shelf_lexical::CjkSplit;

/// Flags of `shelf eval languages`.
#[derive(Debug, Args)]
pub struct LanguagesArgs {
    /// The model: a multilingual one (`--model-name multilingual-e5-small`) to search across
    /// languages; an English one shows what is lost without.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Products in the demo catalogue (in each language).
    #[arg(long, default_value_t = 3_100)]
    pub items: usize,
    /// Shopper queries (each in both languages).
    #[arg(long, default_value_t = 300)]
    pub queries: usize,
    /// Seed of the catalogue and the queries.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Cut-off of NDCG and of the overlap.
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

/// One query in both languages, with what the shop deems relevant to it.
struct QueryPair {
    en: String,
    zh: String,
    leaf: usize,
    color: Option<usize>,
}

impl QueryPair {
    fn text(&self, language: Language) -> &str {
        match language {
            Language::En => &self.en,
            Language::Zh => &self.zh,
        }
    }
}

fn query_pairs(n: usize, seed: u64) -> Vec<QueryPair> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x1a6e);
    (0..n)
        .map(|_| {
            let leaf = rng.random_range(0..Shop::leaves());
            let color = (rng.random::<f64>() < 0.4).then(|| rng.random_range(0..COLORS.len()));
            let draw = rng.random::<u64>();
            let query = |language| {
                Shop::query_in(language, leaf, color, &mut SmallRng::seed_from_u64(draw))
            };
            QueryPair {
                en: query(Language::En),
                zh: query(Language::Zh),
                leaf,
                color,
            }
        })
        .collect()
}

/// Grade 2 for an item of the query's category, 3 when it also has the query's colour.
fn judgments(shop: &Shop, query: &QueryPair) -> Judgments {
    shop.products
        .iter()
        .filter(|p| p.leaf == query.leaf)
        .map(|p| {
            let grade = if query.color == Some(p.color) { 3 } else { 2 };
            (p.item.id.0.clone(), grade)
        })
        .collect()
}

pub(super) async fn languages(args: LanguagesArgs) -> anyhow::Result<()> {
    let pairs = query_pairs(args.queries, args.seed);
    let scratch = std::env::temp_dir().join(format!("shelf-eval-languages-{}", std::process::id()));
    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    // The English query's results on the English catalogue, the reference of the overlap.
    let mut reference: Vec<Vec<String>> = Vec::new();
    // The queries' vectors depend on the model only: embedded once per language.
    let mut query_vectors = Vec::new();
    for catalogue in [Language::En, Language::Zh] {
        let shop = Shop::generate_in(catalogue, args.items, args.seed);
        let items: Vec<Item> = shop.products.iter().map(|p| p.item.clone()).collect();
        let dir = scratch.join(format!("{catalogue:?}"));
        let (_store, embedder, index) = scratch_catalog(&items, &args.model, &dir).await?;
        let judged: Vec<Judgments> = pairs.iter().map(|q| judgments(&shop, q)).collect();
        if query_vectors.is_empty() {
            for language in [Language::En, Language::Zh] {
                let texts = pairs.iter().map(|q| q.text(language).to_string()).collect();
                query_vectors.push(embedder.embed_as(TextRole::Query, texts).await?);
            }
        }
        // One lexical index per way of splitting Chinese, queried in both languages.
        let mut lexical = Vec::new();
        for split in [CjkSplit::Bigrams, CjkSplit::Characters, CjkSplit::Runs] {
            let bm25 = LexicalIndex::in_memory_with(split);
            for item in &items {
                bm25.upsert(item)?;
            }
            bm25.commit(0)?;
            lexical.push((split, bm25));
        }

        for (language, vectors) in [Language::En, Language::Zh].into_iter().zip(&query_vectors) {
            let mut ranked = Vec::with_capacity(pairs.len());
            for vector in vectors {
                let hits = index.search(&vector.0, args.k, None, &Default::default())?;
                ranked.push(hits.into_iter().map(|h| h.id.0).collect::<Vec<_>>());
            }
            if (catalogue, language) == (Language::En, Language::En) {
                reference = ranked.clone();
            }
            let name = format!("semantic, {language:?} queries, {catalogue:?} catalogue");
            rows.push(score(&name, &ranked, &judged, &reference, args.k));

            for (split, bm25) in &lexical {
                // The split only matters where the catalogue or the query is Chinese.
                if *split != CjkSplit::Bigrams
                    && (catalogue, language) == (Language::En, Language::En)
                {
                    continue;
                }
                let mut ranked = Vec::with_capacity(pairs.len());
                for pair in &pairs {
                    let hits = bm25.search(pair.text(language), &Default::default(), args.k)?;
                    ranked.push(
                        hits.hits
                            .into_iter()
                            .map(|(id, _)| id.0)
                            .collect::<Vec<_>>(),
                    );
                }
                let name =
                    format!("lexical ({split:?}), {language:?} queries, {catalogue:?} catalogue");
                rows.push(score(&name, &ranked, &judged, &reference, args.k));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let model = args.model.model_name.clone();
    println!(
        "\n{:<52} {:>9} {:>12}",
        "run",
        format!("NDCG@{}", args.k),
        format!("overlap@{}", args.k)
    );
    for (name, ndcg, overlap) in &rows {
        println!("{name:<52} {ndcg:>9.4} {overlap:>12.4}");
    }
    for (name, ndcg, overlap) in &rows {
        println!(
            "{}",
            serde_json::json!({
                "eval": "languages", "model": model, "run": name, "queries": pairs.len(),
                "items": args.items, "k": args.k, "ndcg": ndcg, "overlap_with_english": overlap,
            })
        );
    }
    Ok(())
}

/// Mean NDCG@k of `ranked` and its mean share of `reference`'s top k (per query).
fn score(
    name: &str,
    ranked: &[Vec<String>],
    judged: &[Judgments],
    reference: &[Vec<String>],
    k: usize,
) -> (String, f64, f64) {
    let n = ranked.len().max(1) as f64;
    let ndcg = ranked
        .iter()
        .zip(judged)
        .map(|(r, j)| ndcg_at(k, r, j))
        .sum::<f64>()
        / n;
    let overlap = ranked
        .iter()
        .zip(reference)
        .map(|(r, reference)| {
            let top: std::collections::HashSet<&String> = reference.iter().take(k).collect();
            r.iter().take(k).filter(|id| top.contains(id)).count() as f64 / k as f64
        })
        .sum::<f64>()
        / n;
    (name.to_owned(), ndcg, overlap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_translations_of_each_other() {
        let pairs = query_pairs(50, 3);
        for q in &pairs {
            assert!(q.en.is_ascii(), "{}", q.en);
            assert!(!q.zh.is_ascii(), "{}", q.zh);
            if let Some(c) = q.color {
                assert!(q.en.starts_with(COLORS[c]), "{} / {:?}", q.en, q.color);
            }
        }
        assert!(pairs.iter().any(|q| q.color.is_some()));
        assert!(pairs.iter().any(|q| q.color.is_none()));
    }
}
