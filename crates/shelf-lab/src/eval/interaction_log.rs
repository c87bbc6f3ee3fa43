//! Interaction logs: reading them (TSV, CSV or JSON lines) and replaying them through the
//! event job.

use super::*;

/// Applies `interactions` (in order) through the event job as records from `*offset` on.
pub(super) async fn replay_events(
    job: &mut shelf_engine::EventJob,
    interactions: &[&Interaction],
    offset: &mut u64,
) -> anyhow::Result<()> {
    use shelf_engine::Job;
    for chunk in interactions.chunks(1024) {
        let records = chunk
            .iter()
            .map(|x| {
                let ts = time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(x.ts_ms) * 1_000_000,
                )?;
                let event = shelf_types::Event {
                    user_id: x.user.clone().into(),
                    kind: x.kind,
                    item_id: Some(x.item.clone().into()),
                    query: None,
                    request_id: None,
                    position: None,
                    ts,
                };
                *offset += 1;
                Ok(shelf_stream::Record {
                    partition: 0,
                    offset: *offset - 1,
                    payload: serde_json::to_vec(&event)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        job.apply(records).await?;
    }
    Ok(())
}

/// One interaction of the log.
#[derive(Clone, Debug)]
pub(super) struct Interaction {
    pub(super) user: String,
    pub(super) item: String,
    pub(super) kind: shelf_types::EventKind,
    pub(super) ts_ms: i64,
}

/// A timestamp: RFC 3339, or Unix seconds (below 10^11) or milliseconds.
pub(super) fn parse_ts(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(n) = text.parse::<f64>() {
        return n
            .is_finite()
            .then(|| if n.abs() < 1e11 { n * 1000.0 } else { n } as i64);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(super) fn parse_kind(text: &str) -> Option<shelf_types::EventKind> {
    serde_json::from_value(serde_json::Value::String(text.trim().to_lowercase())).ok()
}

pub(super) fn read_interactions(
    path: &Path,
    default_kind: &str,
) -> anyhow::Result<Vec<Interaction>> {
    let default_kind = parse_kind(default_kind)
        .filter(|k| *k != shelf_types::EventKind::Search)
        .ok_or_else(|| {
            anyhow::anyhow!("--default-kind {default_kind:?} is not an item event kind")
        })?;
    let mut out = Vec::new();
    for (n, line) in lines(path)? {
        let at = || format!("{}: line {n}", path.display());
        let (user, item, kind, ts) = if line.trim_start().starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
            let field = |name: &str| match &v[name] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(x) => Some(x.to_string()),
                _ => None,
            };
            (
                field("user_id"),
                field("item_id"),
                field("kind"),
                field("ts"),
            )
        } else {
            let fields: Vec<String> = line
                .split(['\t', ','])
                .map(|f| f.trim().to_string())
                .collect();
            match fields.as_slice() {
                [u, i, k, t] => (
                    Some(u.clone()),
                    Some(i.clone()),
                    Some(k.clone()),
                    Some(t.clone()),
                ),
                [u, i, t] => (Some(u.clone()), Some(i.clone()), None, Some(t.clone())),
                _ => anyhow::bail!("{}: expected user_id, item_id, kind, ts", at()),
            }
        };
        let ts_ms = ts.as_deref().and_then(parse_ts);
        if ts_ms.is_none() && n == 1 && !line.trim_start().starts_with('{') {
            continue; // a header
        }
        let (Some(user), Some(item), Some(ts_ms)) = (user, item, ts_ms) else {
            anyhow::bail!(
                "{}: needs user_id, item_id and a timestamp (RFC 3339 or Unix time)",
                at()
            );
        };
        let kind = match kind {
            Some(k) => parse_kind(&k)
                .filter(|k| *k != shelf_types::EventKind::Search)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{}: kind {k:?} is not view, click, add_to_cart or purchase",
                        at()
                    )
                })?,
            None => default_kind,
        };
        anyhow::ensure!(!user.is_empty() && !item.is_empty(), "{}: empty id", at());
        out.push(Interaction {
            user,
            item,
            kind,
            ts_ms,
        });
    }
    anyhow::ensure!(!out.is_empty(), "{}: no interactions", path.display());
    out.sort_by_key(|i| i.ts_ms);
    Ok(out)
}
