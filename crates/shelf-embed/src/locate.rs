//! Finding the model directory: explicit path, then shelf's model cache, then the
//! Hugging Face hub (feature `hub`).

use crate::EmbedError;
use std::path::{Path, PathBuf};

/// Name of the default model's directory inside the cache.
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Hugging Face id of the default model.
pub const DEFAULT_HUB_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The one command that puts the default model into the cache (run from the repository).
pub const FETCH_COMMAND: &str = "scripts/fetch-model.sh";

/// The models scripts/fetch-model.sh installs: directory name in the cache, Hugging Face id.
pub const KNOWN_MODELS: [(&str, &str); 2] = [
    (DEFAULT_MODEL_NAME, DEFAULT_HUB_ID),
    ("multilingual-e5-small", "intfloat/multilingual-e5-small"),
];

/// The Hugging Face id of a model `scripts/fetch-model.sh` knows by this name.
pub fn hub_id_of(name: &str) -> Option<&'static str> {
    KNOWN_MODELS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, id)| *id)
}

/// Files a model directory must hold.
pub(crate) const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// shelf's model cache: `$SHELF_MODEL_CACHE`, else `$XDG_CACHE_HOME/shelf/models`, else
/// `$HOME/.cache/shelf/models` (the same rule as scripts/fetch-model.sh).
pub fn default_cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("SHELF_MODEL_CACHE") {
        return dir;
    }
    let base = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("shelf").join("models")
}

/// Where to look for a model, in order: `explicit`, `cache_dir/name`, then `hub_id`.
#[derive(Clone, Debug)]
pub struct ModelLocator {
    /// `--model-dir` / `SHELF_MODEL_DIR`; when set, it is the only place looked at.
    pub explicit: Option<PathBuf>,
    /// shelf's model cache.
    pub cache_dir: PathBuf,
    /// Directory name of the model inside the cache.
    pub name: String,
    /// Hugging Face model id, downloaded with the `hub` feature when nothing local exists.
    pub hub_id: Option<String>,
}

impl Default for ModelLocator {
    fn default() -> Self {
        Self {
            explicit: None,
            cache_dir: default_cache_dir(),
            name: DEFAULT_MODEL_NAME.to_owned(),
            hub_id: Some(DEFAULT_HUB_ID.to_owned()),
        }
    }
}

impl ModelLocator {
    /// A locator that looks only in `dir`.
    pub fn explicit(dir: impl Into<PathBuf>) -> Self {
        Self {
            explicit: Some(dir.into()),
            ..Self::default()
        }
    }

    /// Returns the first directory holding a model.
    ///
    /// An explicit directory is never silently replaced by another model: if it lacks a
    /// file, that is the error.
    pub fn resolve(&self) -> Result<PathBuf, EmbedError> {
        if let Some(dir) = &self.explicit {
            check_model_dir(dir)?;
            return Ok(dir.clone());
        }
        let mut tried = Vec::new();
        let cached = self.cache_dir.join(&self.name);
        match check_model_dir(&cached) {
            Ok(()) => return Ok(cached),
            Err(e) => tried.push(format!("{} ({e})", cached.display())),
        }
        tried.push("--model-dir / SHELF_MODEL_DIR (not set)".to_owned());
        if let Some(id) = &self.hub_id {
            if cfg!(feature = "hub") {
                return download(id);
            }
            tried.push(format!(
                "Hugging Face id {id} (not tried: shelf was built without the `hub` feature)"
            ));
        }
        Err(EmbedError::ModelNotFound {
            tried,
            fetch_command: FETCH_COMMAND,
        })
    }
}

/// Checks that `dir` holds the files a model needs.
pub(crate) fn check_model_dir(dir: &Path) -> Result<(), EmbedError> {
    for file in REQUIRED_FILES {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(EmbedError::MissingFile { path });
        }
    }
    Ok(())
}

#[cfg(feature = "hub")]
fn download(model_id: &str) -> Result<PathBuf, EmbedError> {
    let err = |e: &dyn std::fmt::Display| EmbedError::Download {
        model_id: model_id.to_owned(),
        reason: e.to_string(),
    };
    let api = hf_hub::api::sync::Api::new().map_err(|e| err(&e))?;
    let repo = api.model(model_id.to_owned());
    let mut dir = None;
    for file in REQUIRED_FILES {
        let path = repo.get(file).map_err(|e| err(&e))?;
        dir = path.parent().map(Path::to_path_buf);
    }
    // Optional: max_seq_length, the prompts, the pooling mode.
    for file in [
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        let _ = repo.get(file);
    }
    dir.ok_or_else(|| err(&"downloaded files have no parent directory"))
}

#[cfg(not(feature = "hub"))]
fn download(model_id: &str) -> Result<PathBuf, EmbedError> {
    Err(EmbedError::Download {
        model_id: model_id.to_owned(),
        reason: "built without the `hub` feature".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_names_every_place_tried_and_the_fetch_command() {
        let cache = tempfile::tempdir().unwrap();
        let locator = ModelLocator {
            explicit: None,
            cache_dir: cache.path().to_path_buf(),
            name: "m".into(),
            hub_id: if cfg!(feature = "hub") {
                None
            } else {
                Some("org/m".into())
            },
        };
        let msg = locator.resolve().unwrap_err().to_string();
        assert!(
            msg.contains(&cache.path().join("m").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("SHELF_MODEL_DIR"), "{msg}");
        assert!(msg.contains(FETCH_COMMAND), "{msg}");
    }

    #[test]
    fn explicit_dir_with_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = ModelLocator::explicit(dir.path()).resolve().unwrap_err();
        assert!(
            matches!(err, EmbedError::MissingFile { ref path } if path.ends_with("tokenizer.json"))
        );
    }
}
