//! Ranking-quality measures: ROC AUC (plain and position-matched), log-loss, NDCG, recall
//! and reciprocal rank.

/// Area under the ROC curve of `scores` for binary `labels` (the probability that a random
/// positive scores above a random negative; ties count half). `None` when a class is empty.
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "one label per score");
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (tie-averaged, 1-based) ranks of the positives: Mann-Whitney U.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += order[i..=j].iter().filter(|&&k| labels[k]).count() as f64 * average_rank;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// ROC AUC over pairs shown at the same position only: the probability that a clicked
/// item scores above an unclicked item shown at the same slot of another response (ties
/// count half). `None` when no position has both classes.
///
/// Shoppers click what they look at, and they look at the top: clicks follow the order the
/// live ranker chose. Plain AUC and NDCG of logged clicks therefore favour that ranker,
/// whatever the relevance. Within one slot everybody looked equally often, so a model
/// scores well here only by telling clicked from skipped items by their features.
pub fn position_matched_auc(scores: &[f32], labels: &[bool], positions: &[u32]) -> Option<f64> {
    assert!(
        scores.len() == labels.len() && labels.len() == positions.len(),
        "one label and position per score"
    );
    let mut slots: std::collections::BTreeMap<u32, (Vec<f32>, Vec<bool>)> = Default::default();
    for ((s, l), p) in scores.iter().zip(labels).zip(positions) {
        let slot = slots.entry(*p).or_default();
        slot.0.push(*s);
        slot.1.push(*l);
    }
    let (mut weighted, mut pairs) = (0.0, 0.0);
    for (scores, labels) in slots.values() {
        let positives = labels.iter().filter(|l| **l).count() as f64;
        let slot_pairs = positives * (labels.len() as f64 - positives);
        if let Some(a) = auc(scores, labels) {
            weighted += a * slot_pairs;
            pairs += slot_pairs;
        }
    }
    (pairs > 0.0).then(|| weighted / pairs)
}

/// Mean binary cross-entropy of probabilities (clamped away from 0 and 1).
pub fn log_loss(probabilities: &[f32], labels: &[bool]) -> f64 {
    assert_eq!(
        probabilities.len(),
        labels.len(),
        "one label per probability"
    );
    if labels.is_empty() {
        return 0.0;
    }
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = f64::from(p).clamp(1e-7, 1.0 - 1e-7);
            if y {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    total / labels.len() as f64
}

/// Graded relevance judgments of one query: item id -> grade (0 = judged not relevant).
pub type Judgments = std::collections::HashMap<String, u32>;

/// NDCG@k with gains `2^grade - 1` and the ideal order of all judged items.
pub fn ndcg_at(k: usize, ranked: &[String], judgments: &Judgments) -> f64 {
    let gain = |g: u32| (2f64).powi(g.min(30) as i32) - 1.0;
    let discount = |i: usize| 1.0 / (i as f64 + 2.0).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| gain(judgments.get(id).copied().unwrap_or(0)) * discount(i))
        .sum();
    let mut ideal: Vec<u32> = judgments.values().copied().filter(|g| *g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| gain(*g) * discount(i))
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Mean NDCG@k of the clicks when each response's shown items are re-ordered by `scores`:
/// `groups[i]` names the response that showed item `i`; responses without a click are left
/// out (`None` when none has one). Ties keep the logged order.
pub fn clicks_ndcg_at(k: usize, scores: &[f32], clicked: &[bool], groups: &[u64]) -> Option<f64> {
    let mut responses: std::collections::BTreeMap<u64, Vec<usize>> = Default::default();
    for (i, g) in groups.iter().enumerate() {
        responses.entry(*g).or_default().push(i);
    }
    let discount = |i: usize| 1.0 / (i as f64 + 2.0).log2();
    let (mut total, mut n) = (0.0, 0usize);
    for mut shown in responses.into_values() {
        let clicks = shown.iter().filter(|&&i| clicked[i]).count();
        if clicks == 0 {
            continue;
        }
        shown.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let dcg: f64 = shown
            .iter()
            .take(k)
            .enumerate()
            .filter(|(_, &i)| clicked[i])
            .map(|(rank, _)| discount(rank))
            .sum();
        let ideal: f64 = (0..clicks.min(k)).map(discount).sum();
        total += dcg / ideal;
        n += 1;
    }
    (n > 0).then(|| total / n as f64)
}

/// Share of the relevant items (grade > 0) found in the first `k`.
pub fn recall_at(k: usize, ranked: &[String], judgments: &Judgments) -> f64 {
    let relevant = judgments.values().filter(|g| **g > 0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| judgments.get(*id).is_some_and(|g| *g > 0))
        .count();
    found as f64 / relevant as f64
}

/// `1 / rank` of the first relevant item (0 when none is ranked).
pub fn reciprocal_rank(ranked: &[String], judgments: &Judgments) -> f64 {
    ranked
        .iter()
        .position(|id| judgments.get(id).is_some_and(|g| *g > 0))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn clicks_ndcg_reorders_each_response_by_score() {
        // Response 1: the click is ranked second by score; response 2: first; response 3
        // has no click and is left out.
        let scores = [0.9, 0.5, 0.1, 0.2, 0.8, 0.3, 0.4];
        let clicked = [false, true, false, false, true, false, false];
        let groups = [1, 1, 1, 2, 2, 3, 3];
        let expected = (1.0 / 3f64.log2() + 1.0) / 2.0;
        let got = clicks_ndcg_at(10, &scores, &clicked, &groups).unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} {expected}");
        assert_eq!(clicks_ndcg_at(10, &[0.1], &[false], &[1]), None);
    }

    use super::*;

    #[test]
    fn ranking_metrics_match_hand_computed_values() {
        let judged: Judgments = [
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("z".to_string(), 0),
        ]
        .into_iter()
        .collect();
        let ranked: Vec<String> = ["x", "b", "a"].iter().map(|s| s.to_string()).collect();
        // DCG = 1/log2(3) + 3/log2(4) = 0.63093 + 1.5; IDCG = 3 + 1/log2(3) = 3.63093.
        let expected = (1.0 / 3f64.log2() + 1.5) / (3.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(10, &ranked, &judged) - expected).abs() < 1e-12);
        assert_eq!(recall_at(2, &ranked, &judged), 0.5);
        assert_eq!(recall_at(100, &ranked, &judged), 1.0);
        assert_eq!(reciprocal_rank(&ranked, &judged), 0.5);
        assert_eq!(reciprocal_rank(&["x".to_string()], &judged), 0.0);
    }

    #[test]
    fn auc_matches_hand_counted_pairs() {
        // Pairs (pos, neg): (0.9 > 0.1), (0.9 > 0.4), (0.3 > 0.1), (0.3 < 0.4) -> 3/4.
        let scores = [0.9, 0.1, 0.3, 0.4];
        let labels = [true, false, true, false];
        assert!((auc(&scores, &labels).unwrap() - 0.75).abs() < 1e-12);
        // Ties count half.
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        assert_eq!(auc(&[0.5, 0.2], &[true, true]), None);
    }

    #[test]
    fn position_matched_auc_compares_within_slots_only() {
        // Slot 0: (0.9 > 0.2) -> 1 of 1; slot 1: (0.1 < 0.5), (0.1 < 0.3) -> 0 of 2.
        let scores = [0.9, 0.2, 0.1, 0.5, 0.3];
        let labels = [true, false, true, false, false];
        let positions = [0, 0, 1, 1, 1];
        let got = position_matched_auc(&scores, &labels, &positions).unwrap();
        assert!((got - 1.0 / 3.0).abs() < 1e-12, "{got}");
        assert_eq!(
            position_matched_auc(&[0.1, 0.2], &[true, false], &[0, 1]),
            None
        );
    }

    /// Shoppers who examine slot `i` with probability `1/(1+i)` and click examined items by
    /// their relevance, shown lists ordered by a ranker that is only partly right: plain AUC
    /// and NDCG of clicks rank that ranker above relevance itself; the position-matched AUC
    /// does not.
    #[test]
    fn position_matched_auc_is_not_fooled_by_the_logging_ranker() {
        let mut rng = shelf_types::SplitMix(3);
        let (mut relevance, mut logger, mut labels, mut positions, mut groups) =
            (vec![], vec![], vec![], vec![], vec![]);
        for request in 0..3000u64 {
            let mut shown: Vec<(f32, f32)> = (0..10)
                .map(|_| {
                    let r = rng.unit() as f32;
                    (r, r + 0.8 * rng.unit() as f32)
                })
                .collect();
            shown.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (slot, (r, l)) in shown.into_iter().enumerate() {
                let examined = rng.unit() < 1.0 / (1.0 + slot as f64);
                labels.push(examined && rng.unit() < f64::from(r));
                relevance.push(r);
                logger.push(l);
                positions.push(slot as u32);
                groups.push(request);
            }
        }
        let plain = |s: &[f32]| auc(s, &labels).unwrap();
        let ndcg = |s: &[f32]| clicks_ndcg_at(10, s, &labels, &groups).unwrap();
        let matched = |s: &[f32]| position_matched_auc(s, &labels, &positions).unwrap();
        assert!(
            plain(&logger) > plain(&relevance),
            "plain AUC favours the logger"
        );
        assert!(
            ndcg(&logger) > ndcg(&relevance),
            "clicks NDCG favours the logger"
        );
        assert!(
            matched(&relevance) > matched(&logger) + 0.05,
            "matched AUC: relevance {} vs logger {}",
            matched(&relevance),
            matched(&logger)
        );
    }

    #[test]
    fn log_loss_of_certain_and_coin_flip_predictions() {
        assert!(log_loss(&[1.0, 0.0], &[true, false]) < 1e-6);
        assert!((log_loss(&[0.5, 0.5], &[true, false]) - std::f64::consts::LN_2).abs() < 1e-9);
    }
}
