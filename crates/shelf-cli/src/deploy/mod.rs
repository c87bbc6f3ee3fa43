//! `shelf deploy`'s work against Arroyo's REST API: register the UDFs of udfs/ and create or
//! update the pipelines of pipelines/, idempotently (what is already there unchanged is left
//! alone; a changed pipeline is stopped with a checkpoint, deleted and created again).

mod command;

use anyhow::{bail, Context};
use axum::http::{Method, StatusCode};
pub use command::{run, DeployArgs};
use serde_json::{json, Value};
use shelf_api::client::Transport;
use std::time::{Duration, Instant};

/// One Arroyo UDF: its function name and its file (dependency header included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udf {
    pub name: String,
    pub definition: String,
}

/// One Arroyo pipeline: its name and its SQL (placeholders not yet filled in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    pub name: String,
    pub sql: String,
}

/// The UDFs compiled into the binary (udfs/*.rs).
pub fn bundled_udfs() -> Vec<Udf> {
    [
        ("item_text", include_str!("../../../../udfs/item_text.rs")),
        (
            "event_weight",
            include_str!("../../../../udfs/event_weight.rs"),
        ),
        ("embed", include_str!("../../../../udfs/embed.rs")),
        (
            "covisit_pairs",
            include_str!("../../../../udfs/covisit_pairs.rs"),
        ),
    ]
    .into_iter()
    .map(|(name, definition)| Udf {
        name: name.into(),
        definition: definition.into(),
    })
    .collect()
}

/// The pipelines compiled into the binary (pipelines/*.sql), named `shelf-<stem>`.
pub fn bundled_pipelines() -> Vec<Pipeline> {
    [
        (
            "item_vectors",
            include_str!("../../../../pipelines/item_vectors.sql"),
        ),
        (
            "item_stats",
            include_str!("../../../../pipelines/item_stats.sql"),
        ),
        (
            "user_activity",
            include_str!("../../../../pipelines/user_activity.sql"),
        ),
        (
            "covisits",
            include_str!("../../../../pipelines/covisits.sql"),
        ),
    ]
    .into_iter()
    .map(|(stem, sql)| Pipeline {
        name: pipeline_name(stem),
        sql: sql.into(),
    })
    .collect()
}

/// The Arroyo pipeline name of a pipelines/ file stem.
pub fn pipeline_name(stem: &str) -> String {
    format!("shelf-{}", stem.replace('_', "-"))
}

/// The topics the pipelines and shelf read and write.
pub const TOPICS: [&str; 6] = [
    "shelf-items",
    "shelf-item-vectors",
    "shelf-events",
    "shelf-item-stats",
    "shelf-user-activity",
    "shelf-covisit-pairs",
];

/// `sql` with `${FLUVIO_ENDPOINT}` filled in; any other `${...}` is an error.
pub fn render(sql: &str, fluvio_endpoint: &str) -> anyhow::Result<String> {
    let rendered = sql.replace("${FLUVIO_ENDPOINT}", fluvio_endpoint);
    if let Some(start) = rendered.find("${") {
        let rest = &rendered[start..];
        let end = rest.find('}').map_or(rest.len(), |i| i + 1);
        bail!("unknown placeholder {}", &rest[..end]);
    }
    Ok(rendered)
}

/// What deploy did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
}

/// One line of the deploy report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub kind: &'static str,
    pub name: String,
    pub outcome: Outcome,
}

/// Settings of a deploy against Arroyo.
#[derive(Clone, Debug)]
pub struct ArroyoDeploy {
    pub fluvio_endpoint: String,
    pub parallelism: u64,
    /// How long to wait for Arroyo to answer, and for a pipeline to stop.
    pub wait: Duration,
}

/// Arroyo's error message in a response body (`{"error": ...}` or the body itself).
fn arroyo_message(body: &Value) -> String {
    match body.get("error").or_else(|| body.get("message")) {
        Some(Value::String(m)) => m.clone(),
        Some(other) => other.to_string(),
        None if body.is_null() => "(no body)".into(),
        None => body.to_string(),
    }
}

async fn expect_ok<T: Transport>(
    api: &T,
    method: Method,
    path: &str,
    body: Option<Value>,
    what: &str,
) -> anyhow::Result<Value> {
    let (status, reply) = api
        .call(method, path, body)
        .await
        .with_context(|| format!("{what}: Arroyo did not answer"))?;
    if !status.is_success() {
        bail!(
            "{what}: Arroyo answered {status}: {}",
            arroyo_message(&reply)
        );
    }
    Ok(reply)
}

/// The `data` array of a list response.
fn data(reply: &Value) -> Vec<Value> {
    reply
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `errors` of an Arroyo validation answer (empty when it accepted).
fn validation_errors(reply: &Value) -> Vec<String> {
    reply
        .get("errors")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Lines compared without trailing whitespace or blank-line differences.
fn same_text(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    norm(a) == norm(b)
}

impl ArroyoDeploy {
    /// Waits until Arroyo answers, then registers `udfs` and creates or updates `pipelines`.
    pub async fn run<T: Transport>(
        &self,
        api: &T,
        udfs: &[Udf],
        pipelines: &[Pipeline],
    ) -> anyhow::Result<Vec<Step>> {
        self.wait_for_arroyo(api).await?;
        let mut steps = Vec::new();
        for udf in udfs {
            steps.push(self.deploy_udf(api, udf).await?);
        }
        for pipeline in pipelines {
            steps.push(self.deploy_pipeline(api, pipeline).await?);
        }
        Ok(steps)
    }

    async fn wait_for_arroyo<T: Transport>(&self, api: &T) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.wait;
        loop {
            let last = match api.call(Method::GET, "/api/v1/pipelines", None).await {
                Ok((status, _)) if status.is_success() => return Ok(()),
                Ok((status, body)) => format!("{status}: {}", arroyo_message(&body)),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "Arroyo did not become ready within {:?} (last answer: {last})",
                    self.wait
                );
            }
            tracing::info!(last, "waiting for Arroyo");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn deploy_udf<T: Transport>(&self, api: &T, udf: &Udf) -> anyhow::Result<Step> {
        let what = format!("UDF {}", udf.name);
        let existing = data(&expect_ok(api, Method::GET, "/api/v1/udfs", None, &what).await?);
        let current = existing.iter().find(|u| field(u, "name") == udf.name);
        if let Some(current) = current {
            if same_text(field(current, "definition"), &udf.definition) {
                return Ok(Step {
                    kind: "udf",
                    name: udf.name.clone(),
                    outcome: Outcome::Unchanged,
                });
            }
        }
        let check = expect_ok(
            api,
            Method::POST,
            "/api/v1/udfs/validate",
            Some(json!({ "definition": udf.definition, "language": "rust" })),
            &what,
        )
        .await?;
        let errors = validation_errors(&check);
        if !errors.is_empty() {
            bail!("Arroyo rejected {what}: {}", errors.join("; "));
        }
        let outcome = match current {
            Some(current) => {
                let path = format!("/api/v1/udfs/{}", field(current, "id"));
                expect_ok(api, Method::DELETE, &path, None, &what).await?;
                Outcome::Updated
            }
            None => Outcome::Created,
        };
        expect_ok(
            api,
            Method::POST,
            "/api/v1/udfs",
            Some(json!({
                "prefix": "",
                "language": "rust",
                "definition": udf.definition,
                "description": format!("shelf: udfs/{}.rs", udf.name),
            })),
            &what,
        )
        .await?;
        Ok(Step {
            kind: "udf",
            name: udf.name.clone(),
            outcome,
        })
    }

    async fn deploy_pipeline<T: Transport>(
        &self,
        api: &T,
        pipeline: &Pipeline,
    ) -> anyhow::Result<Step> {
        let what = format!("pipeline {}", pipeline.name);
        let query = render(&pipeline.sql, &self.fluvio_endpoint).context(what.clone())?;
        let existing = data(&expect_ok(api, Method::GET, "/api/v1/pipelines", None, &what).await?);
        let current = existing.iter().find(|p| field(p, "name") == pipeline.name);
        if let Some(current) = current {
            if same_text(field(current, "query"), &query) {
                return Ok(Step {
                    kind: "pipeline",
                    name: pipeline.name.clone(),
                    outcome: Outcome::Unchanged,
                });
            }
        }
        let check = expect_ok(
            api,
            Method::POST,
            "/api/v1/pipelines/validate_query",
            Some(json!({ "query": query })),
            &what,
        )
        .await?;
        let errors = validation_errors(&check);
        if !errors.is_empty() {
            bail!("Arroyo rejected the query of {what}: {}", errors.join("; "));
        }
        let outcome = match current {
            Some(current) => {
                self.stop_and_delete(api, field(current, "id"), &what)
                    .await?;
                Outcome::Updated
            }
            None => Outcome::Created,
        };
        expect_ok(
            api,
            Method::POST,
            "/api/v1/pipelines",
            Some(json!({
                "name": pipeline.name,
                "query": query,
                "parallelism": self.parallelism,
            })),
            &what,
        )
        .await?;
        Ok(Step {
            kind: "pipeline",
            name: pipeline.name.clone(),
            outcome,
        })
    }

    /// Stops a pipeline with a final checkpoint, waits until its job is no longer running,
    /// and deletes it.
    async fn stop_and_delete<T: Transport>(
        &self,
        api: &T,
        id: &str,
        what: &str,
    ) -> anyhow::Result<()> {
        let path = format!("/api/v1/pipelines/{id}");
        expect_ok(
            api,
            Method::PATCH,
            &path,
            Some(json!({ "stop": "checkpoint" })),
            what,
        )
        .await?;
        let deadline = Instant::now() + self.wait;
        loop {
            let jobs =
                data(&expect_ok(api, Method::GET, &format!("{path}/jobs"), None, what).await?);
            let running: Vec<&str> = jobs
                .iter()
                .map(|j| field(j, "state"))
                .filter(|s| !matches!(*s, "Stopped" | "Finished" | "Failed" | ""))
                .collect();
            if running.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: still {} after {:?} waiting for it to stop",
                    running.join(", "),
                    self.wait
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let (status, reply) = api.call(Method::DELETE, &path, None).await?;
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            bail!(
                "{what}: Arroyo answered {status}: {}",
                arroyo_message(&reply)
            );
        }
        Ok(())
    }
}

/// Whether Fluvio accepts `name` as a topic name: lowercase letters, digits and hyphens,
/// at most 63 characters, starting and ending with a letter or digit.
pub fn is_valid_topic_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(ok_char)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_name_is_one_fluvio_accepts() {
        for topic in TOPICS {
            assert!(is_valid_topic_name(topic), "{topic}");
        }
        for bad in ["shelf.items", "Shelf-items", "shelf_items", "-shelf", ""] {
            assert!(!is_valid_topic_name(bad), "{bad}");
        }
        // The pipelines name no other topic.
        for pipeline in bundled_pipelines() {
            for line in pipeline
                .sql
                .lines()
                .filter(|l| l.trim().starts_with("topic"))
            {
                let topic = line.split('\'').nth(1).expect("topic = '...'");
                assert!(
                    TOPICS.contains(&topic),
                    "{} reads or writes {topic}",
                    pipeline.name
                );
            }
        }
    }

    #[test]
    fn placeholders_are_filled_in_and_unknown_ones_refused() {
        assert_eq!(
            render("endpoint = '${FLUVIO_ENDPOINT}'", "sc:9003").unwrap(),
            "endpoint = 'sc:9003'"
        );
        let e = render("a ${NOPE} b", "sc:9003").unwrap_err();
        assert!(e.to_string().contains("${NOPE}"), "{e}");
    }

    #[test]
    fn the_bundled_files_are_named_after_their_functions_and_stems() {
        for udf in bundled_udfs() {
            assert!(
                udf.definition.contains(&format!("fn {}(", udf.name)),
                "{}",
                udf.name
            );
        }
        let names: Vec<String> = bundled_pipelines().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "shelf-item-vectors",
                "shelf-item-stats",
                "shelf-user-activity",
                "shelf-covisits"
            ]
        );
    }
}
