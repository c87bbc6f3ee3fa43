//! `shelf bench embed`: the model's sentences/s, call latency and CPU per call at each batch
//! size, through the server's own worker.

use super::*;

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Texts: `queries` (2–5 words), `titles` or `descriptions` of the demo shop.
    #[arg(long, value_enum, default_value_t = EmbedTexts::Queries)]
    pub texts: EmbedTexts,
    /// Language of the texts: `en`, or `zh` (the same texts in Chinese; for a multilingual
    /// model).
    #[arg(long, value_enum, default_value = "en")]
    pub language: Language,
    /// Batch sizes to measure, each in turn (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub batch: Vec<usize>,
    /// Seconds per batch size (after one warm-up batch).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Milliseconds of idleness between calls, as a server has between requests (0: back
    /// to back). Throughput then counts busy time only; latency and CPU per call say what
    /// idleness costs.
    #[arg(long, default_value_t = 0.0)]
    pub gap_ms: f64,
    /// Print the texts, one per line, instead of measuring (to feed another engine the
    /// same texts).
    #[arg(long)]
    pub print_texts: bool,
}

/// The demo-shop texts `shelf bench embed` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedTexts {
    Queries,
    Titles,
    Descriptions,
}

/// 512 distinct texts of `kind` in `language`, the same on every run.
pub(super) fn embed_texts(kind: EmbedTexts, language: Language) -> Vec<String> {
    let shop = Shop::generate_in(language, 512, 7);
    let mut rng = SmallRng::seed_from_u64(7);
    match kind {
        EmbedTexts::Queries => (0..512)
            .map(|_| demo_query_in(language, &mut rng))
            .collect(),
        EmbedTexts::Titles => shop.products.iter().map(|p| p.item.title.clone()).collect(),
        // The demo's descriptions are one sentence; shop descriptions run longer, so each
        // gets the care and shipping paragraph a product page carries (~110 tokens in all).
        EmbedTexts::Descriptions => shop
            .products
            .iter()
            .map(|p| {
                format!(
                    "{} {} It is easy to clean, built to last for years and backed by a two \
                     year warranty. Ideal as a gift or for your own home, it ships in \
                     recyclable packaging. Dimensions and care instructions are included in \
                     the box, and our customer service team is happy to help with any \
                     questions about sizing or fit. Returns are free within thirty days.",
                    p.item.title,
                    p.item.description.as_deref().unwrap_or_default()
                )
            })
            .collect(),
    }
}

pub(super) fn embed_bench(args: EmbedBenchArgs) -> anyhow::Result<()> {
    let texts = embed_texts(args.texts, args.language);
    if args.print_texts {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for t in &texts {
            // A closed pipe (`| head`) ends the listing quietly.
            if writeln!(out, "{t}").is_err() {
                return Ok(());
            }
        }
        let _ = out.flush();
        return Ok(());
    }
    let kind = format!("{:?}", args.texts).to_lowercase();
    // Queries carry the model's query prompt, item texts its document prompt.
    let role = match args.texts {
        EmbedTexts::Queries => TextRole::Query,
        EmbedTexts::Titles | EmbedTexts::Descriptions => TextRole::Document,
    };
    for &batch in &args.batch {
        anyhow::ensure!(batch > 0, "--batch sizes must be positive");
        let embedder = args.model.start(batch)?;
        let chunk = |i: usize| -> Vec<String> {
            (0..batch)
                .map(|j| texts[(i * batch + j) % texts.len()].clone())
                .collect()
        };
        embedder.embed_blocking_as(role, chunk(0))?; // warm-up
        let gap = Duration::from_secs_f64(args.gap_ms.max(0.0) / 1000.0);
        let started = Instant::now();
        let cpu_before = process_cpu_seconds();
        let mut sentences = 0usize;
        let mut call_ms = Vec::new();
        let mut i = 1;
        while started.elapsed().as_secs_f64() < args.seconds {
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
            let call = Instant::now();
            sentences += embedder.embed_blocking_as(role, chunk(i))?.len();
            call_ms.push(call.elapsed().as_secs_f64() * 1000.0);
            i += 1;
        }
        let cpu_seconds = process_cpu_seconds() - cpu_before;
        let busy_seconds = call_ms.iter().sum::<f64>() / 1000.0;
        let mut call_latency = Latencies::default();
        for &ms in &call_ms {
            call_latency.record_ms(ms);
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "embed", "engine": "shelf", "model": embedder.model_id(),
                "texts": kind, "language": format!("{:?}", args.language).to_lowercase(),
                "batch": batch,
                "gap_ms": args.gap_ms, "calls": call_ms.len(),
                "sentences": sentences, "seconds": round(busy_seconds),
                "sentences_per_s": round(sentences as f64 / busy_seconds),
                "call_ms_p50": round(call_latency.quantile_ms(0.5)),
                "call_ms_p99": round(call_latency.quantile_ms(0.99)),
                "cpu_ms_per_call": round(cpu_seconds * 1000.0 / call_ms.len().max(1) as f64),
                "threads": candle_threads(), "device": embedder.device(),
                "quantize": embedder.quantization().name(),
            })
        );
    }
    Ok(())
}

/// CPU seconds this process has run so far, all threads together (Linux: the scheduler's
/// per-thread nanoseconds; elsewhere 0).
pub(super) fn process_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// The threads the CPU forward pass uses: rayon's pool (`RAYON_NUM_THREADS`, else every core).
pub(super) fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
