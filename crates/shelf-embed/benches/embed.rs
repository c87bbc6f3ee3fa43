//! Embedding throughput (sentences/second) for batch sizes 1 and 32 on short product titles
//! (~12 tokens) and on descriptions (~120 tokens), with the real all-MiniLM-L6-v2 model; and
//! one search query at a time (with the model's query prompt) for all-MiniLM-L6-v2 and, when
//! it is in the cache (`make model MODEL=multilingual-e5-small`), multilingual-e5-small.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shelf_embed::{EmbedConfig, ModelLocator, SentenceEncoder, TextRole};

/// Shoppers' queries: a few words each, English and Chinese.
const QUERIES: [&str; 8] = [
    "grey sofa",
    "wireless headphones noise cancelling",
    "running shoes men size 10",
    "cast iron pan",
    "kids building blocks",
    "灰色沙发",
    "无线耳机",
    "office chair lumbar support",
];

const TITLES: [&str; 8] = [
    "Men's Trail Running Shoes, Waterproof, Size 10",
    "Stainless Steel Insulated Water Bottle 750ml Blue",
    "Wireless Noise Cancelling Over-Ear Headphones",
    "Organic Cotton Crew Neck T-Shirt, Pack of 3",
    "Cast Iron Skillet 12 inch Pre-Seasoned",
    "LED Desk Lamp with USB Charging Port",
    "Kids' Wooden Building Blocks Set, 100 Pieces",
    "Ergonomic Office Chair with Lumbar Support",
];

fn description(i: usize) -> String {
    format!(
        "{} — designed for everyday use, this product combines durable materials with a \
         thoughtful design. It is easy to clean, built to last for years and backed by a \
         two year warranty. Ideal as a gift or for your own home, it ships in recyclable \
         packaging. Dimensions and care instructions are included in the box, and our \
         customer service team is happy to help with any questions about sizing or fit. Every unit is inspected before it \
         ships, and returns are free within thirty days of delivery.",
        TITLES[i % TITLES.len()]
    )
}

fn bench(c: &mut Criterion) {
    let dir = ModelLocator::default()
        .resolve()
        .unwrap_or_else(|e| panic!("{e}"));
    let encoder = SentenceEncoder::load(&dir, EmbedConfig::default()).expect("model loads");
    let titles: Vec<String> = (0..32)
        .map(|i| TITLES[i % TITLES.len()].to_owned())
        .collect();
    let descriptions: Vec<String> = (0..32).map(description).collect();
    let tokens = |t: &String| encoder.token_ids(t).map(|ids| ids.len()).unwrap_or(0);
    eprintln!(
        "tokens per text: titles ~{}, descriptions ~{}; cpu threads: {}",
        titles.iter().map(tokens).sum::<usize>() / titles.len(),
        descriptions.iter().map(tokens).sum::<usize>() / descriptions.len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    for (name, texts) in [("titles", &titles), ("descriptions", &descriptions)] {
        for batch in [1usize, 32] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(
                BenchmarkId::new(name, batch),
                &texts[..batch],
                |b, texts| b.iter(|| encoder.embed(texts).expect("embeds")),
            );
        }
    }
    group.finish();

    // One query per call, as the server embeds a search's text: each model's p50 is the
    // figure to compare (multilingual-e5-small has 12 layers to MiniLM's 6, and a prompt).
    let mut group = c.benchmark_group("query");
    group.sample_size(20);
    group.throughput(Throughput::Elements(QUERIES.len() as u64));
    let f32_config = EmbedConfig {
        quantization: shelf_embed::Quantization::None,
        ..EmbedConfig::default()
    };
    let mut models = vec![
        ("all-MiniLM-L6-v2", encoder),
        (
            "all-MiniLM-L6-v2, f32",
            SentenceEncoder::load(&dir, f32_config).expect("model loads"),
        ),
    ];
    let e5 = ModelLocator {
        name: "multilingual-e5-small".into(),
        hub_id: None,
        ..ModelLocator::default()
    };
    match e5.resolve() {
        Ok(dir) => models.push((
            "multilingual-e5-small",
            SentenceEncoder::load(&dir, EmbedConfig::default()).expect("model loads"),
        )),
        Err(e) => eprintln!("multilingual-e5-small not benchmarked: {e}"),
    }
    for (name, encoder) in &models {
        let counts: Vec<usize> = QUERIES
            .iter()
            .map(|q| {
                let prompted = format!("{}{q}", encoder.prompts().query);
                encoder.token_ids(&prompted).map_or(0, |ids| ids.len())
            })
            .collect();
        eprintln!("{name}: tokens per query (prompt included): {counts:?}");
        group.bench_function(*name, |b| {
            b.iter(|| {
                for q in QUERIES {
                    encoder.embed_as(TextRole::Query, &[q]).expect("embeds");
                }
            })
        });
    }
    group.finish();

    // A catalogue's titles, 32 per call as the item job batches them (with the model's
    // document prompt).
    let mut group = c.benchmark_group("catalogue");
    group.sample_size(10);
    group.throughput(Throughput::Elements(titles.len() as u64));
    for (name, encoder) in &models {
        group.bench_function(*name, |b| {
            b.iter(|| {
                encoder
                    .embed_as(TextRole::Document, &titles)
                    .expect("embeds")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
