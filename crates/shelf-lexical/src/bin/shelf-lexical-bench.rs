//! Builds a lexical index from an item file the way the item job does (commits every batch)
//! and times it, then times searches: figures for the README, in whatever profile it is
//! built (use `--release`).
//!
//! `shelf-lexical-bench ITEMS.jsonl [--batch 256] [--queries 2000] [--dir DIR]`

use shelf_lexical::LexicalIndex;
use shelf_types::{Item, SearchFilter, SplitMix};
use std::io::BufRead;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut file = None;
    let (mut batch, mut queries, mut dir) = (256usize, 2000usize, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--batch" => batch = args.next().ok_or("--batch N")?.parse()?,
            "--queries" => queries = args.next().ok_or("--queries N")?.parse()?,
            "--dir" => dir = Some(std::path::PathBuf::from(args.next().ok_or("--dir DIR")?)),
            "-h" | "--help" => {
                println!(
                    "shelf-lexical-bench ITEMS.jsonl [--batch 256] [--queries 2000] [--dir DIR]"
                );
                return Ok(());
            }
            other => file = Some(other.to_string()),
        }
    }
    let file = file.ok_or("give an items file (JSON lines of items or item records)")?;
    let mut items = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(&file)?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut value: serde_json::Value = serde_json::from_str(&line)?;
        if let Some(map) = value.as_object_mut() {
            map.remove("op");
        }
        items.push(serde_json::from_value::<Item>(value)?);
    }
    let scratch = std::env::temp_dir().join(format!("shelf-lexical-bench-{}", std::process::id()));
    let dir = dir.unwrap_or(scratch.clone());
    let rss_before = rss_bytes();
    let index = LexicalIndex::create(&dir)?;
    let started = Instant::now();
    let mut commits = Vec::new();
    for (n, chunk) in items.chunks(batch).enumerate() {
        for item in chunk {
            index.upsert(item)?;
        }
        let commit = Instant::now();
        index.commit(((n + 1) * batch).min(items.len()) as u64)?;
        commits.push(commit.elapsed().as_secs_f64() * 1e3);
    }
    let build = started.elapsed().as_secs_f64();
    commits.sort_by(f64::total_cmp);
    println!(
        "indexed {} items in {build:.2} s ({:.0} items/s), batches of {batch}, commit p50 {:.2} ms p99 {:.2} ms",
        items.len(),
        items.len() as f64 / build,
        percentile(&commits, 0.5),
        percentile(&commits, 0.99),
    );
    println!(
        "on disk {:.1} MiB, resident growth {:.1} MiB",
        index.size_on_disk() as f64 / (1 << 20) as f64,
        rss_bytes().saturating_sub(rss_before) as f64 / (1 << 20) as f64
    );

    // Queries: 1 to 3 words of random items' titles, a tenth with a misspelt word.
    let mut rng = SplitMix(11);
    let mut times = Vec::with_capacity(queries);
    let mut hits = 0usize;
    for q in 0..queries {
        let words: Vec<&str> = items[rng.below(items.len())].title.split(' ').collect();
        let n = 1 + rng.below(3.min(words.len()));
        let start = rng.below(words.len() + 1 - n);
        let mut text = words[start..start + n].join(" ");
        if q % 10 == 0 && text.len() > 5 {
            text.remove(2);
        }
        let t = Instant::now();
        let found = index.search(&text, &SearchFilter::default(), 100)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        hits += found.hits.len();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{queries} searches (top 100): p50 {:.3} ms, p99 {:.3} ms, mean hits {:.1}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        hits as f64 / queries as f64
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Resident memory (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
