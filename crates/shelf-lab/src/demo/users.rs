//! Simulated shoppers with hidden preferences who search through the public API and click
//! by a position-biased click model, and the NDCG measure of how well results fit them.

use super::shop::{Language, Shop, Tier, COLORS};
use axum::http::{Method, StatusCode};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use shelf_api::client::Transport;
use std::collections::HashMap;

/// A shopper's hidden taste: two favourite leaf categories, a colour and a price tier.
#[derive(Clone, Debug)]
pub struct SimUser {
    pub id: String,
    pub leaves: [usize; 2],
    pub color: usize,
    pub tier: Tier,
}

/// The facets of the shop's items, by id (what the simulation judges relevance by), and
/// the items bought together.
#[derive(Debug)]
pub struct Facets {
    by_id: HashMap<String, (usize, usize, Tier)>,
    companions: HashMap<String, String>,
    /// The language shoppers type their queries in (the shop's).
    pub language: Language,
}

impl Facets {
    pub fn of(shop: &Shop) -> Self {
        Self {
            by_id: shop
                .products
                .iter()
                .map(|p| (p.item.id.0.clone(), (p.leaf, p.color, p.tier)))
                .collect(),
            companions: (0..shop.products.len())
                .filter_map(|i| {
                    let c = shop.companion(i)?;
                    Some((
                        shop.products[i].item.id.0.clone(),
                        shop.products[c].item.id.0.clone(),
                    ))
                })
                .collect(),
            language: shop.language,
        }
    }

    /// The item shoppers turn to after `item_id` (see [`Shop::companion`]).
    pub fn companion(&self, item_id: &str) -> Option<&str> {
        self.companions.get(item_id).map(String::as_str)
    }

    /// Graded relevance 0..=4: 2 for a favourite category, 1 for the colour, 1 for the
    /// price tier (colour and tier count only within a favourite category).
    pub fn relevance(&self, user: &SimUser, item_id: &str) -> u32 {
        let Some(&(leaf, color, tier)) = self.by_id.get(item_id) else {
            return 0;
        };
        if !user.leaves.contains(&leaf) {
            return 0;
        }
        2 + u32::from(color == user.color) + u32::from(tier == user.tier)
    }
}

/// `n` users, deterministic in `seed`.
pub fn users(n: usize, seed: u64) -> Vec<SimUser> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let a = rng.random_range(0..Shop::leaves());
            let mut b = rng.random_range(0..Shop::leaves());
            while b == a {
                b = rng.random_range(0..Shop::leaves());
            }
            SimUser {
                id: format!("user-{i:05}"),
                leaves: [a, b],
                color: rng.random_range(0..COLORS.len()),
                tier: [Tier::Budget, Tier::Mid, Tier::Premium][rng.random_range(0..3)],
            }
        })
        .collect()
}

/// Chance that a shopper looks at position `i` (0-based) of a result list.
pub fn examine_probability(i: usize) -> f64 {
    1.0 / (1.0 + i as f64).powf(0.9)
}

/// Chance of a click on an examined item of relevance `rel`.
fn click_probability(rel: u32) -> f64 {
    0.03 + 0.22 * f64::from(rel)
}

/// What one simulated session (or several, added up) did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionOutcome {
    pub searches: u64,
    pub clicks: u64,
    pub carts: u64,
    pub purchases: u64,
    /// Searches with at least one click, and the sum of their NDCG@10 of the clicks in the
    /// order they were served (1 when the clicked items were the top ones).
    pub searches_with_clicks: u64,
    pub clicks_ndcg_sum: f64,
}

impl SessionOutcome {
    pub fn add(&mut self, other: &SessionOutcome) {
        self.searches += other.searches;
        self.clicks += other.clicks;
        self.carts += other.carts;
        self.purchases += other.purchases;
        self.searches_with_clicks += other.searches_with_clicks;
        self.clicks_ndcg_sum += other.clicks_ndcg_sum;
    }

    /// Mean NDCG@10 of the clicks in the served order, over searches with a click: an
    /// online measure of the ranker that served them (no logging-policy bias, unlike
    /// re-ordering logged responses offline).
    pub fn clicks_ndcg_at_10(&self) -> f64 {
        self.clicks_ndcg_sum / self.searches_with_clicks.max(1) as f64
    }

    /// Clicks per search.
    pub fn clicks_per_search(&self) -> f64 {
        self.clicks as f64 / self.searches.max(1) as f64
    }
}

/// Chance that a shopper who clicked an item with a companion goes on to view it, and that
/// one who put it in the cart adds the companion too.
const COMPANION_VIEW: f64 = 0.3;
const COMPANION_CART: f64 = 0.5;

/// One session of `user`: a search in one of their categories (sometimes with their
/// colour), then clicks by the click model, some of which lead to carts and purchases, and
/// to the clicked item's companion (bought together); every action goes through the API.
pub async fn session(
    api: &impl Transport,
    facets: &Facets,
    user: &SimUser,
    rng: &mut SmallRng,
) -> anyhow::Result<SessionOutcome> {
    let mut outcome = SessionOutcome::default();
    let leaf = if rng.random::<f64>() < 0.85 {
        user.leaves[rng.random_range(0..2)]
    } else {
        rng.random_range(0..Shop::leaves())
    };
    // Shoppers type product words (sometimes with a colour) or browse broadly.
    let query = if rng.random::<f64>() < 0.3 {
        Shop::broad_query_in(facets.language, leaf)
    } else {
        let color = (rng.random::<f64>() < 0.4).then_some(user.color);
        Shop::query_in(facets.language, leaf, color, rng)
    };
    let (status, response) = api
        .call(
            Method::POST,
            "/v1/search",
            Some(serde_json::json!({ "query": query, "user_id": user.id, "k": 10 })),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "search answered {status}: {response}"
    );
    outcome.searches += 1;
    let request_id = response["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let now =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let mut events = vec![serde_json::json!({
        "user_id": user.id, "kind": "search", "query": query, "ts": now,
    })];
    let items = response["items"].as_array().cloned().unwrap_or_default();
    let mut clicked = vec![false; items.len()];
    for (i, item) in items.iter().enumerate() {
        let id = item["id"].as_str().unwrap_or_default();
        if rng.random::<f64>() >= examine_probability(i) {
            continue;
        }
        if rng.random::<f64>() >= click_probability(facets.relevance(user, id)) {
            continue;
        }
        outcome.clicks += 1;
        clicked[i] = true;
        events.push(serde_json::json!({
            "user_id": user.id, "kind": "click", "item_id": id, "query": query,
            "request_id": request_id, "position": i + 1, "ts": now,
        }));
        let companion = facets
            .companion(id)
            .filter(|_| rng.random::<f64>() < COMPANION_VIEW);
        if let Some(companion) = companion {
            events.push(serde_json::json!({
                "user_id": user.id, "kind": "view", "item_id": companion, "ts": now,
            }));
        }
        if rng.random::<f64>() < 0.25 {
            outcome.carts += 1;
            // The shop passes the response's request id on with the cart and the purchase
            // it led to, so A/B tests count them for the ranker that served it.
            events.push(serde_json::json!({
                "user_id": user.id, "kind": "add_to_cart", "item_id": id,
                "request_id": request_id, "ts": now,
            }));
            if let Some(companion) = companion.filter(|_| rng.random::<f64>() < COMPANION_CART) {
                outcome.carts += 1;
                events.push(serde_json::json!({
                    "user_id": user.id, "kind": "add_to_cart", "item_id": companion, "ts": now,
                }));
            }
            if rng.random::<f64>() < 0.4 {
                outcome.purchases += 1;
                events.push(serde_json::json!({
                    "user_id": user.id, "kind": "purchase", "item_id": id,
                    "request_id": request_id, "ts": now,
                }));
            }
        }
    }
    // The served order as scores: the first item highest.
    let served: Vec<f32> = (0..items.len()).map(|i| -(i as f32)).collect();
    if let Some(ndcg) = shelf_rank::clicks_ndcg_at(10, &served, &clicked, &vec![0; items.len()]) {
        outcome.searches_with_clicks = 1;
        outcome.clicks_ndcg_sum = ndcg;
    }
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/events",
            Some(serde_json::Value::Array(events)),
        )
        .await?;
    anyhow::ensure!(
        status == StatusCode::ACCEPTED,
        "events answered {status}: {body}"
    );
    Ok(outcome)
}

/// `sessions_per_user` sessions of every user, the same ones for the same `seed` (so two
/// rankers can be compared online on the same shoppers and queries), added up.
pub async fn sessions(
    api: &impl Transport,
    facets: &Facets,
    users: &[SimUser],
    sessions_per_user: usize,
    seed: u64,
) -> anyhow::Result<SessionOutcome> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut total = SessionOutcome::default();
    for _ in 0..sessions_per_user {
        for user in users {
            total.add(&session(api, facets, user, &mut rng).await?);
        }
    }
    Ok(total)
}

/// One interaction of [`browsing_log`].
#[derive(Clone, Debug, PartialEq)]
pub struct Interaction {
    pub user_id: String,
    pub item_id: String,
    pub kind: &'static str,
    pub ts_secs: i64,
}

/// An interaction log of the shoppers browsing without a search engine, for offline
/// evaluation (`shelf eval demo-data`): each session a shopper opens one category (a
/// favourite with probability 0.85), looks through 10 of its items in random order with
/// the click model's attention and clicks (a click is a view here), carts and buys some,
/// and turns to clicked items' companions as in [`session`]. Sessions are an hour apart
/// per shopper, events in a session a minute apart. Deterministic in `seed`.
pub fn browsing_log(
    shop: &Shop,
    users: &[SimUser],
    sessions_per_user: usize,
    seed: u64,
) -> Vec<Interaction> {
    let facets = Facets::of(shop);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut by_leaf: Vec<Vec<usize>> = vec![Vec::new(); Shop::leaves()];
    for (i, p) in shop.products.iter().enumerate() {
        by_leaf[p.leaf].push(i);
    }
    let start = 1_767_225_600; // 2026-01-01T00:00:00Z
    let mut log = Vec::new();
    for session in 0..sessions_per_user {
        for (u, user) in users.iter().enumerate() {
            let mut ts = start + (session * users.len() + u) as i64 * 3600;
            let mut push = |log: &mut Vec<Interaction>, item: &str, kind: &'static str| {
                ts += 60;
                log.push(Interaction {
                    user_id: user.id.clone(),
                    item_id: item.to_string(),
                    kind,
                    ts_secs: ts,
                });
            };
            let leaf = if rng.random::<f64>() < 0.85 {
                user.leaves[rng.random_range(0..2)]
            } else {
                rng.random_range(0..Shop::leaves())
            };
            let mut shown = by_leaf[leaf].clone();
            for i in (1..shown.len()).rev() {
                shown.swap(i, rng.random_range(0..=i));
            }
            for (position, &i) in shown.iter().take(10).enumerate() {
                let id = shop.products[i].item.id.as_str();
                if rng.random::<f64>() >= examine_probability(position)
                    || rng.random::<f64>() >= click_probability(facets.relevance(user, id))
                {
                    continue;
                }
                push(&mut log, id, "view");
                let companion = facets
                    .companion(id)
                    .filter(|_| rng.random::<f64>() < COMPANION_VIEW);
                if let Some(companion) = companion {
                    push(&mut log, companion, "view");
                }
                if rng.random::<f64>() < 0.25 {
                    push(&mut log, id, "add_to_cart");
                    if let Some(companion) =
                        companion.filter(|_| rng.random::<f64>() < COMPANION_CART)
                    {
                        push(&mut log, companion, "add_to_cart");
                    }
                    if rng.random::<f64>() < 0.4 {
                        push(&mut log, id, "purchase");
                    }
                }
            }
        }
    }
    log.sort_by_key(|x| x.ts_secs);
    log
}

/// NDCG@k of a ranked list of ids for `user` (1 when the list is ideal for the
/// relevant items of the shop, 0 when it holds none).
pub fn ndcg_at(k: usize, ranked: &[String], user: &SimUser, facets: &Facets) -> f64 {
    let judgments: shelf_rank::Judgments = facets
        .by_id
        .keys()
        .map(|id| (id.clone(), facets.relevance(user, id)))
        .filter(|(_, grade)| *grade > 0)
        .collect();
    shelf_rank::ndcg_at(k, ranked, &judgments)
}

/// Which queries [`personalization_gain`] asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// A product noun of the favourite category (`sofa`): one category answers it.
    Product,
    /// The favourite category's area (`living room furniture`): several categories do.
    Broad,
}

/// Mean NDCG@10 of personalised and anonymous searches for the same queries: for each
/// user, one query per favourite category.
pub async fn personalization_gain(
    api: &impl Transport,
    facets: &Facets,
    users: &[SimUser],
    kind: QueryKind,
    seed: u64,
) -> anyhow::Result<(f64, f64)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut personal, mut anonymous, mut n) = (0.0, 0.0, 0usize);
    for user in users {
        for &leaf in &user.leaves {
            let query = match kind {
                QueryKind::Product => Shop::query_for(leaf, None, &mut rng),
                QueryKind::Broad => Shop::broad_query_for(leaf),
            };
            for (with_user, total) in [(true, &mut personal), (false, &mut anonymous)] {
                // The ranking itself is measured: no exploration slots.
                let mut body = serde_json::json!({ "query": query, "k": 10, "explore": false });
                if with_user {
                    body["user_id"] = serde_json::json!(user.id);
                }
                let (status, response) = api.call(Method::POST, "/v1/search", Some(body)).await?;
                anyhow::ensure!(
                    status == StatusCode::OK,
                    "search answered {status}: {response}"
                );
                let ids: Vec<String> = response["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| i["id"].as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                *total += ndcg_at(10, &ids, user, facets);
            }
            n += 1;
        }
    }
    Ok((personal / n.max(1) as f64, anonymous / n.max(1) as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndcg_is_one_for_the_ideal_order_and_zero_without_relevant_items() {
        let shop = Shop::generate(300, 1);
        let facets = Facets::of(&shop);
        let user = &users(1, 2)[0];
        let mut ranked: Vec<(u32, String)> = shop
            .products
            .iter()
            .map(|p| {
                (
                    facets.relevance(user, p.item.id.as_str()),
                    p.item.id.0.clone(),
                )
            })
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        let ideal: Vec<String> = ranked.iter().map(|(_, id)| id.clone()).collect();
        assert!((ndcg_at(10, &ideal, user, &facets) - 1.0).abs() < 1e-12);
        let worst: Vec<String> = ideal.iter().rev().take(10).cloned().collect();
        assert_eq!(ndcg_at(10, &worst, user, &facets), 0.0);
    }

    #[test]
    fn the_browsing_log_is_deterministic_in_time_order_and_follows_companions() {
        let shop = Shop::generate(620, 3);
        let shoppers = users(20, 4);
        let log = browsing_log(&shop, &shoppers, 10, 5);
        assert_eq!(log, browsing_log(&shop, &shoppers, 10, 5));
        assert!(log.len() > 200, "{}", log.len());
        assert!(log.windows(2).all(|w| w[0].ts_secs <= w[1].ts_secs));
        let facets = Facets::of(&shop);
        // Some views follow a view of the item they are the companion of.
        let followed = log
            .windows(2)
            .filter(|w| {
                w[0].user_id == w[1].user_id
                    && facets.companion(&w[0].item_id) == Some(w[1].item_id.as_str())
            })
            .count();
        assert!(followed > 10, "{followed}");
    }

    #[test]
    fn attention_falls_with_position() {
        assert_eq!(examine_probability(0), 1.0);
        assert!(examine_probability(1) > examine_probability(5));
        assert!(click_probability(4) > click_probability(0));
    }
}
