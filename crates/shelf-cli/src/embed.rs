//! `shelf embed`: JSON lines in on stdin, the same lines with a "vector" out on stdout.

use crate::model::ModelArgs;
use anyhow::Context;
use clap::Args;
use serde_json::{Map, Value};
use shelf_embed::{EmbedError, Embedder, TextRole};
use std::io::{BufRead, BufWriter, Write};
use std::process::ExitCode;

/// Flags of `shelf embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Texts per forward pass (and lines read before writing).
    #[arg(long, env = "SHELF_BATCH_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,

    /// Which of the model's prompts goes in front of each text: `raw` (none: the text as
    /// given), `query` or `document` (the prompts shelf uses for search texts and item
    /// texts; multilingual-e5: `query: ` and `passage: `; none for all-MiniLM-L6-v2).
    #[arg(long, env = "SHELF_EMBED_PROMPT", default_value = "raw", value_parser = parse_role)]
    pub prompt: TextRole,
}

fn parse_role(s: &str) -> Result<TextRole, String> {
    match s {
        "raw" => Ok(TextRole::Raw),
        "query" => Ok(TextRole::Query),
        "document" => Ok(TextRole::Document),
        other => Err(format!(
            "unknown prompt `{other}`; use raw, query or document"
        )),
    }
}

/// A parsed input line: the JSON object and its text.
type ParsedLine = (Map<String, Value>, String);
/// A parsed line waiting in the batch, with its 1-based number.
type PendingLine = (usize, Map<String, Value>, String);

/// A line that cannot be embedded: reported with its 1-based number.
struct BadLine {
    line: usize,
    reason: String,
}

/// Runs the subcommand; a bad line gives exit code 1 after every line before it is written.
pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let batch_size = args.batch_size as usize;
    let embedder = args.model.start(batch_size)?;
    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let outcome = embed_lines(&embedder, args.prompt, stdin, &mut out, batch_size)?;
    out.flush().context("writing to stdout")?;
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(bad) => {
            eprintln!("error: line {}: {}", bad.line, bad.reason);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Reads, embeds and writes until the input ends or a line is bad. The outer error is an
/// I/O or model failure; the inner one a bad input line.
fn embed_lines(
    embedder: &Embedder,
    role: TextRole,
    mut input: impl BufRead,
    out: &mut impl Write,
    batch_size: usize,
) -> anyhow::Result<Result<(), BadLine>> {
    let mut batch: Vec<PendingLine> = Vec::with_capacity(batch_size);
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf).context("reading stdin")?;
        if n == 0 {
            break;
        }
        line_no += 1;
        match parse_line(&buf) {
            Ok(None) => continue,
            Ok(Some((obj, text))) => batch.push((line_no, obj, text)),
            Err(reason) => {
                return Ok(flush(embedder, role, &mut batch, out)?.and(Err(BadLine {
                    line: line_no,
                    reason,
                })))
            }
        }
        if batch.len() >= batch_size {
            if let Err(bad) = flush(embedder, role, &mut batch, out)? {
                return Ok(Err(bad));
            }
        }
    }
    flush(embedder, role, &mut batch, out)
}

/// Parses one input line; `None` for a blank line.
fn parse_line(bytes: &[u8]) -> Result<Option<ParsedLine>, String> {
    let line = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?
        .trim();
    if line.is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("expected a JSON object".into());
    };
    match obj.get("text") {
        Some(Value::String(text)) => {
            let text = text.clone();
            Ok(Some((obj, text)))
        }
        Some(_) => Err("field \"text\" must be a string".into()),
        None => Err("missing field \"text\"".into()),
    }
}

/// Embeds and writes the batch. When a text is rejected, the lines before it are still
/// written and the rejected line is returned.
fn flush(
    embedder: &Embedder,
    role: TextRole,
    batch: &mut Vec<PendingLine>,
    out: &mut impl Write,
) -> anyhow::Result<Result<(), BadLine>> {
    let mut bad = None;
    let vectors = loop {
        let texts = batch.iter().map(|(_, _, t)| t.clone()).collect();
        match embedder.embed_blocking_as(role, texts) {
            Ok(v) => break v,
            Err(EmbedError::EmptyText { index }) => {
                let reason = "field \"text\" is empty".to_owned();
                bad = Some(BadLine {
                    line: batch[index].0,
                    reason,
                });
                batch.truncate(index);
            }
            Err(EmbedError::TextTooLong {
                index,
                bytes,
                max_bytes,
            }) => {
                let reason =
                    format!("text is {bytes} bytes, more than the limit of {max_bytes} bytes");
                bad = Some(BadLine {
                    line: batch[index].0,
                    reason,
                });
                batch.truncate(index);
            }
            Err(e) => return Err(e.into()),
        }
    };
    for ((_, mut obj, _), vector) in batch.drain(..).zip(vectors) {
        obj.insert("vector".into(), serde_json::to_value(vector.0)?);
        serde_json::to_writer(&mut *out, &obj)?;
        out.write_all(b"\n")?;
    }
    Ok(bad.map_or(Ok(()), Err))
}
