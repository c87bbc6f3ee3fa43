//! Product search through the router: hybrid, lexical and semantic modes, exact ids, typos,
//! facets against a brute-force count, pages, sorting, and the 422s of the new fields.

use crate::common;

use axum::http::{Method, StatusCode};
use common::{catalog, index_catalog, server};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};

async fn shop(flags: &[&str], n: usize) -> (common::TestServer, Vec<Value>) {
    let mut items = catalog(n);
    // The demo's items have no attributes: give them one, for the attribute filters.
    for (n, item) in items.iter_mut().enumerate() {
        item["attributes"] = json!({"seats": n % 3 + 1, "modular": n % 4 == 0});
    }
    let s = server(flags, true).await;
    index_catalog(&s, &items).await;
    (s, items)
}

async fn search(s: &common::TestServer, body: Value) -> Value {
    let (status, response) = s.call(Method::POST, "/v1/search", Some(body.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {response}");
    response
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// The words the lexical index holds for an item (its text fields, analysed), for brute
/// force.
fn words_of(item: &Value) -> HashSet<String> {
    let mut text = String::new();
    for field in ["title", "brand", "category", "description"] {
        text.push_str(item[field].as_str().unwrap_or(""));
        text.push(' ');
    }
    for tag in item["tags"].as_array().into_iter().flatten() {
        text.push_str(tag.as_str().unwrap());
        text.push(' ');
    }
    shelf_lexical::analyse(&text).into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_model_numbers_and_misspelt_words_are_found() {
    let (s, items) = shop(&["--exploration-share", "0"], 62).await;
    // A SKU is the first result in every mode that reads words.
    for mode in ["hybrid", "lexical"] {
        let body = search(
            &s,
            json!({"query": "sku-000041", "mode": mode, "explain": true}),
        )
        .await;
        assert_eq!(ids(&body)[0], "sku-000041", "{body}");
        assert!(body["items"][0]["sources"]
            .as_array()
            .unwrap()
            .contains(&json!("exact_id")));
        assert_eq!(body["mode"], mode);
    }
    // The model number in a title ("... K512") is a word the embedding model never saw.
    let title = items[17]["title"].as_str().unwrap();
    let model = title.rsplit(' ').next().unwrap();
    let body = search(&s, json!({"query": model})).await;
    assert_eq!(ids(&body)[0], items[17]["id"], "{model}: {body}");
    // Semantic mode has no lexical candidates and reports its mode.
    let body = search(
        &s,
        json!({"query": model, "mode": "semantic", "explain": true}),
    )
    .await;
    assert_eq!(body["mode"], "semantic");
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| !i["sources"].as_array().unwrap().contains(&json!("lexical"))));
    // A misspelt brand is corrected and said so; lexical mode embeds nothing.
    let brand = items[5]["brand"].as_str().unwrap().to_lowercase();
    assert!(brand.len() >= 5, "{brand}");
    let typo = format!("{}{}", &brand[..2], &brand[3..]); // one letter dropped
    let body = search(&s, json!({"query": typo, "mode": "lexical", "k": 50})).await;
    assert_eq!(body["corrected"], json!([typo]), "{body}");
    assert!(ids(&body).contains(&items[5]["id"].as_str().unwrap().to_string()));
    assert!(
        body["timings"]["embed"].as_f64().unwrap() < 0.5,
        "nothing is embedded"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facets_count_the_whole_matched_set_and_pages_do_not_overlap() {
    let (s, items) = shop(&["--exploration-share", "0.3"], 124).await;
    let by_id: BTreeMap<&str, &Value> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap(), i))
        .collect();
    // Lexical mode: the matched set is every item holding the word (up to the depth
    // retrieved, 100 here), which brute force finds.
    let holders = |w: &String| items.iter().filter(|i| words_of(i).contains(w)).count();
    let word = words_of(&items[3])
        .into_iter()
        .filter(|w| w.len() > 3 && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| holders(w) < 100)
        .max_by_key(holders)
        .unwrap();
    assert!(holders(&word) >= 10, "{word}");
    let holding: HashSet<&str> = items
        .iter()
        .filter(|i| words_of(i).contains(&word))
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let request = json!({
        "query": word, "mode": "lexical", "k": 3,
        "facets": ["category", "brand", "price", "in_stock"], "price_buckets": [50, 200],
    });
    let body = search(&s, request).await;
    assert_eq!(body["total"], holding.len(), "{word}: {body}");
    let mut brands: BTreeMap<String, u64> = BTreeMap::new();
    let mut top_categories: BTreeMap<String, u64> = BTreeMap::new();
    let (mut cheap, mut mid, mut dear, mut in_stock) = (0, 0, 0, 0);
    for id in &holding {
        let item = by_id[id];
        *brands
            .entry(item["brand"].as_str().unwrap().into())
            .or_default() += 1;
        let top = item["category"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        *top_categories.entry(top.into()).or_default() += 1;
        match item["price"].as_f64().unwrap() {
            p if p < 50.0 => cheap += 1,
            p if p < 200.0 => mid += 1,
            _ => dear += 1,
        }
        in_stock += u64::from(item["in_stock"] != false);
    }
    let facet = |name: &str| -> BTreeMap<String, u64> {
        body["facets"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["value"].as_str().unwrap().to_string(),
                    v["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(facet("brand"), brands);
    let categories = facet("category");
    for (top, n) in &top_categories {
        assert_eq!(categories[top], *n, "{top}");
    }
    assert_eq!(
        body["facets"]["price"],
        json!([{"to": 50.0, "count": cheap}, {"from": 50.0, "to": 200.0, "count": mid},
               {"from": 200.0, "count": dear}])
    );
    assert_eq!(
        body["facets"]["in_stock"],
        json!([{"value": true, "count": in_stock},
               {"value": false, "count": holding.len() as u64 - in_stock}])
    );

    // Pages of a hybrid search with exploration: disjoint, and the same when asked again.
    let page = |offset: usize| json!({"query": "comfortable sofa", "k": 10, "offset": offset});
    let mut seen = HashSet::new();
    let mut pages = Vec::new();
    for offset in [0, 10, 20] {
        let got = ids(&search(&s, page(offset)).await);
        assert_eq!(got.len(), 10);
        for id in &got {
            assert!(seen.insert(id.clone()), "{id} on two pages");
        }
        pages.push(got);
    }
    assert_eq!(ids(&search(&s, page(10)).await), pages[1], "page 2 changed");

    // Cheapest first: ascending prices, matching items only, paged.
    let sorted = |offset: usize| json!({"query": word, "mode": "lexical", "sort": "price_asc", "k": 5, "offset": offset});
    let mut prices = Vec::new();
    for offset in [0, 5] {
        let body = search(&s, sorted(offset)).await;
        for item in body["items"].as_array().unwrap() {
            assert!(holding.contains(item["id"].as_str().unwrap()));
            prices.push(item["price"].as_f64().unwrap());
        }
    }
    assert!(prices.windows(2).all(|w| w[0] <= w[1]), "{prices:?}");
    let cheapest = holding
        .iter()
        .map(|id| by_id[id]["price"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    assert_eq!(prices[0], cheapest);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_fields_reject_bad_values_naming_them() {
    let (s, _) = shop(&[], 31).await;
    for (body, names) in [
        (
            json!({"query": "sofa", "k": 10, "offset": 995}),
            "offset + k",
        ),
        (json!({"query": "sofa", "facets": ["colour"]}), "colour"),
        (json!({"query": "sofa", "sort": "cheapest"}), "cheapest"),
        (json!({"query": "sofa", "mode": "fuzzy"}), "fuzzy"),
        (
            json!({"query": "sofa", "facets": ["price"], "price_buckets": [100, 50]}),
            "price_buckets",
        ),
        (
            json!({"query": "sofa", "price_buckets": [50]}),
            "price_buckets",
        ),
    ] {
        let (status, response) = s.call(Method::POST, "/v1/search", Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {response}"
        );
        assert!(response.to_string().contains(names), "{body}: {response}");
    }
    s.stop().await;
}

/// The filter of an item as the engine sees it, for brute force.
fn passes(filter: &shelf_types::SearchFilter, item: &Value) -> bool {
    let mut item = item.clone();
    item.as_object_mut().unwrap().remove("op");
    let item: shelf_types::Item = serde_json::from_value(item).unwrap();
    filter.matches(&shelf_types::ItemAttributes::of(&item))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_on_every_field_with_or_and_not_equal_brute_force() {
    let (s, items) = shop(&["--exploration-share", "0"], 124).await;
    let brand = items[5]["brand"].as_str().unwrap().to_string();
    let other_brand = items
        .iter()
        .map(|i| i["brand"].as_str().unwrap())
        .find(|b| *b != brand)
        .unwrap()
        .to_string();
    let tag = items[7]["tags"][0].as_str().unwrap().to_string();
    let style = items[9]["tags"][1].as_str().unwrap().to_string();
    let its_style = items[7]["tags"][1].as_str().unwrap().to_string();
    let department = items[11]["category"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let filters = [
        json!({"brand": brand}),
        json!({"should": [{"brand": brand}, {"brand": other_brand}]}),
        json!({"tags_any": [tag, style]}),
        json!({"tags_all": [tag, its_style]}),
        json!({"attributes": {"seats": 2}}),
        json!({"attributes": {"modular": true}, "must_not": [{"category_prefix": department}]}),
        json!({"must": [{"should": [{"tags_any": [tag]}, {"price_max": 100}]}],
               "must_not": [{"brand": brand}, {"in_stock": false}]}),
    ];
    // The word every item holds in its category or title is hard to pick; every item of the
    // demo shop has a colour tag, so a query of all colours matches every item lexically.
    let colours: HashSet<String> = items
        .iter()
        .map(|i| i["tags"][0].as_str().unwrap().to_string())
        .collect();
    let query = colours.into_iter().collect::<Vec<_>>().join(" ");
    for filter_json in filters {
        let filter: shelf_types::SearchFilter =
            serde_json::from_value(filter_json.clone()).unwrap();
        let want: HashSet<String> = items
            .iter()
            .filter(|i| passes(&filter, i))
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert!(!want.is_empty(), "{filter_json} matches no item");
        assert!(want.len() < items.len(), "{filter_json} matches every item");
        let lexical = search(
            &s,
            json!({"query": query, "mode": "lexical", "k": 124, "filters": filter_json}),
        )
        .await;
        let got: HashSet<String> = ids(&lexical).into_iter().collect();
        assert_eq!(got, want, "lexical with {filter_json}");
        assert_eq!(lexical["total"], want.len(), "{filter_json}");
        for mode in ["semantic", "hybrid"] {
            let body = search(
                &s,
                json!({"query": "grey sofa", "mode": mode, "k": 50, "filters": filter_json}),
            )
            .await;
            let got = ids(&body);
            assert!(!got.is_empty(), "{mode} with {filter_json}: {body}");
            for id in &got {
                assert!(want.contains(id), "{mode} with {filter_json} returned {id}");
            }
        }
        // A recommendation (no query) obeys the filter too.
        let body = search(
            &s,
            json!({"user_id": "u1", "k": 20, "filters": filter_json}),
        )
        .await;
        for id in ids(&body) {
            assert!(
                want.contains(&id),
                "recommendation with {filter_json} returned {id}"
            );
        }
    }
    for (bad, names) in [
        (json!({"attributes": {"seats": [2]}}), "attributes"),
        (
            json!({"must": [{"must": [{"must": [{"must": [{"brand": "x"}]}]}]}]}),
            "4 levels",
        ),
        (
            json!({"tags_any": (0..300).map(|n| n.to_string()).collect::<Vec<_>>()}),
            "too many",
        ),
        (json!({"should": [{"colour": "red"}]}), "colour"),
    ] {
        let body = json!({"query": "sofa", "filters": bad});
        let (status, response) = s.call(Method::POST, "/v1/search", Some(body.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {response}"
        );
        assert!(response.to_string().contains(names), "{body}: {response}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_boost_bury_pin_block_and_diversify_exactly() {
    let (s, items) = shop(&["--exploration-share", "0"], 124).await;
    let by_id: BTreeMap<String, &Value> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_string(), i))
        .collect();
    // Every demo item has a colour tag: a query of every colour matches every item.
    let colours: std::collections::BTreeSet<&str> = items
        .iter()
        .map(|i| i["tags"][0].as_str().unwrap())
        .collect();
    let query = colours.into_iter().collect::<Vec<_>>().join(" ");
    let base_request = json!({"query": query, "mode": "lexical", "k": 40});
    let base = search(&s, base_request.clone()).await;
    let base_ids = ids(&base);
    assert!(base_ids.len() >= 12, "{base}");
    let brand = by_id[&base_ids[5]]["brand"].as_str().unwrap().to_string();
    let with_rules = |rules: Value| {
        let mut request = base_request.clone();
        request["rules"] = rules;
        request
    };

    // A boost scales the score of the matching items (away from zero), nothing else: each
    // item's score is its explained (unboosted) score, scaled when its brand matches.
    // (Scores drift between requests as impressions update the CTR features, so the
    // explanation of the same response is the reference.)
    for factor in [4.0, 0.25] {
        let mut request =
            with_rules(json!({"boost": [{"filter": {"brand": brand}, "factor": factor}]}));
        request["explain"] = json!(true);
        // Every candidate, so buried items are still in the list.
        request["k"] = json!(100);
        let body = search(&s, request).await;
        let mut boosted_items = 0;
        for item in body["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap();
            let before: f64 = item["explanation"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["contribution"].as_f64().unwrap())
                .sum();
            let want = if by_id[id]["brand"] == brand.as_str() {
                boosted_items += 1;
                if before >= 0.0 {
                    before * factor
                } else {
                    before / factor
                }
            } else {
                before
            };
            let after = item["score"].as_f64().unwrap();
            assert!(
                (after - want).abs() < 1e-3 * want.abs().max(1.0),
                "{id}: {after} != {want}"
            );
        }
        assert!(boosted_items > 0, "{body}");
        let scores: Vec<f64> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["score"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{body}");
    }
    // Pins go to their positions; the others keep their order; a block removes an item.
    let (p1, p3, blocked) = (&base_ids[9], &base_ids[11], &base_ids[0]);
    let body = search(
        &s,
        with_rules(json!({
            "pin": [{"id": p3, "position": 3}, {"id": p1, "position": 1},
                    {"id": "no-such-item", "position": 2}],
            "block": [blocked],
        })),
    )
    .await;
    let got = ids(&body);
    assert_eq!(&got[0], p1, "{body}");
    assert_eq!(&got[2], p3, "{body}");
    assert!(!got.contains(blocked), "{body}");
    // The others in score order (scores drift between requests as impressions update the
    // CTR features, so the response's own scores are the reference).
    let scores = |body: &Value, skip: &[&String]| -> Vec<f64> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| !skip.iter().any(|id| i["id"] == id.as_str()))
            .map(|i| i["score"].as_f64().unwrap())
            .collect()
    };
    let descending = |v: &[f64]| v.windows(2).all(|w| w[0] >= w[1]);
    assert!(descending(&scores(&body, &[p1, p3])), "{body}");
    assert_eq!(got.len(), 40, "{body}");
    assert_eq!(body["skipped_pins"][0]["id"], "no-such-item", "{body}");
    assert!(
        body["skipped_pins"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("not in the catalog"),
        "{body}"
    );
    // A pin that fails the filters is skipped, with that reason.
    let mut filtered = with_rules(json!({"pin": [{"id": p1, "position": 1}]}));
    filtered["filters"] = json!({"must_not": [{"brand": by_id[p1]["brand"]}]});
    let body = search(&s, filtered).await;
    assert!(!ids(&body).contains(p1), "{body}");
    assert_eq!(
        body["skipped_pins"][0]["reason"], "fails the filters",
        "{body}"
    );

    // Diversity: at most one item per category among the first 5, the rest in order.
    let body = search(
        &s,
        with_rules(json!({"diversity": {"max_per_category": 1}})),
    )
    .await;
    let got = ids(&body);
    let category = |id: &String| by_id[id]["category"].as_str().unwrap().to_string();
    // The first items are one per category, best first; then the capped ones, best first,
    // each of a category already shown.
    let distinct: HashSet<String> = got.iter().map(category).collect();
    let (kept, capped) = got.split_at(distinct.len());
    let kept_categories: HashSet<String> = kept.iter().map(category).collect();
    assert_eq!(kept_categories.len(), kept.len(), "{body}");
    assert!(
        kept.len() > 1 && !capped.is_empty(),
        "not a test of diversity: {body}"
    );
    assert!(
        capped
            .iter()
            .all(|id| kept_categories.contains(&category(id))),
        "{body}"
    );
    let all = scores(&body, &[]);
    assert!(
        descending(&all[..kept.len()]) && descending(&all[kept.len()..]),
        "{body}"
    );
    assert!(
        all[kept.len()] > all[kept.len() - 1],
        "diversity changed nothing: {body}"
    );

    // Maximal marginal relevance (its arithmetic is checked exactly in the engine's unit
    // test): the best match stays first, and at λ 0.3 the list is no longer in score order.
    let body = search(&s, with_rules(json!({"diversity": {"mmr_lambda": 0.3}}))).await;
    let spread = scores(&body, &[]);
    assert!(spread.iter().all(|s| *s <= spread[0]), "{body}");
    assert!(!descending(&spread), "MMR changed nothing: {body}");
    let body = search(&s, with_rules(json!({"diversity": {"mmr_lambda": 1.0}}))).await;
    assert!(descending(&scores(&body, &[])), "{body}");
    let (status, response) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(with_rules(json!({"diversity": {"mmr_lambda": 1.5}}))),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    assert!(response.to_string().contains("mmr_lambda"), "{response}");

    // Conflicting rules are a 422 naming the field.
    let (status, response) = s
        .call(
            Method::POST,
            "/v1/search",
            Some(with_rules(
                json!({"pin": [{"id": p1, "position": 1}], "block": [p1]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{response}");
    assert!(response.to_string().contains("rules.pin"), "{response}");

    // Stored rules: every search runs with the placement's, under the request's own.
    let stored = json!({"pin": [{"id": p3, "position": 1}], "block": [blocked, p1]});
    let (status, response) = s
        .call(Method::PUT, "/v1/rules/search", Some(stored.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let (_, all) = s.call(Method::GET, "/v1/rules", None).await;
    assert_eq!(all, json!({"search": stored}));
    let got = ids(&search(&s, base_request.clone()).await);
    assert_eq!(&got[0], p3);
    assert!(!got.contains(blocked) && !got.contains(p1), "{got:?}");
    // The request's pin takes position 1 (the stored pin there gives way) and beats the
    // stored block of its id; the other stored block holds.
    let got = ids(&search(&s, with_rules(json!({"pin": [{"id": p1, "position": 1}]}))).await);
    assert_eq!(&got[0], p1);
    assert!(!got.contains(blocked), "{got:?}");
    // Bad rules and unknown placements are 422s, and change nothing.
    for (path, body) in [
        ("/v1/rules/home", json!({})),
        (
            "/v1/rules/search",
            json!({"pin": [{"id": p1, "position": 1}], "block": [p1]}),
        ),
        (
            "/v1/rules/search",
            json!({"boost": [{"filter": {}, "factor": 0}]}),
        ),
        ("/v1/rules/search", json!({"bury": []})),
    ] {
        let (status, response) = s.call(Method::PUT, path, Some(body)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {response}"
        );
    }
    let (_, all) = s.call(Method::GET, "/v1/rules", None).await;
    assert_eq!(all, json!({"search": stored}));
    // Empty rules remove the placement's.
    let (status, _) = s
        .call(Method::PUT, "/v1/rules/search", Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, all) = s.call(Method::GET, "/v1/rules", None).await;
    assert_eq!(all, json!({}));
    assert!(ids(&search(&s, base_request.clone()).await).contains(blocked));
    s.stop().await;
}
