//! A model directory's sentence-transformers settings: the prompt for each text role and the
//! pooling mode.

use crate::EmbedError;
use shelf_types::TextRole;
use std::path::Path;

/// The prompts put in front of queries and of documents before they are tokenised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prompts {
    /// In front of search texts (multilingual-e5: `query: `).
    pub query: String,
    /// In front of item texts (multilingual-e5: `passage: `).
    pub document: String,
}

impl Prompts {
    /// The prompt for `role` (empty for [`TextRole::Raw`]).
    pub fn for_role(&self, role: TextRole) -> &str {
        match role {
            TextRole::Query => &self.query,
            TextRole::Document => &self.document,
            TextRole::Raw => "",
        }
    }

    /// Reads `config_sentence_transformers.json`'s `prompts`: `query`, and `document` or
    /// `passage` (the names sentence-transformers models use). A missing file or key is an
    /// empty prompt; a file that is not JSON, or a prompt that is not a string, is an error.
    pub fn read(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join("config_sentence_transformers.json");
        let Some(value) = read_json(&path)? else {
            return Ok(Self::default());
        };
        let prompts = value.get("prompts");
        let get = |names: &[&str]| -> Result<String, EmbedError> {
            for name in names {
                match prompts.and_then(|p| p.get(name)) {
                    None => continue,
                    Some(serde_json::Value::String(s)) => return Ok(s.clone()),
                    Some(other) => {
                        return Err(EmbedError::InvalidConfig {
                            path: path.clone(),
                            reason: format!("prompts.{name} must be a string, found {other}"),
                        })
                    }
                }
            }
            Ok(String::new())
        };
        Ok(Self {
            query: get(&["query"])?,
            document: get(&["document", "passage"])?,
        })
    }
}

/// Checks `1_Pooling/config.json`, where present: shelf pools by the mean over tokens, so a
/// model made for CLS or max pooling is refused rather than embedded wrongly.
pub(crate) fn check_mean_pooling(dir: &Path) -> Result<(), EmbedError> {
    let path = dir.join("1_Pooling").join("config.json");
    let Some(value) = read_json(&path)? else {
        return Ok(());
    };
    let flag = |k: &str| value.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    if flag("pooling_mode_mean_tokens") {
        return Ok(());
    }
    let modes: Vec<&str> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_bool() == Some(true))
        .map(|(k, _)| k.as_str())
        .collect();
    Err(EmbedError::InvalidConfig {
        path,
        reason: format!(
            "the model pools with {}; shelf pools by the mean over tokens only",
            if modes.is_empty() {
                "no mode set".to_owned()
            } else {
                modes.join(", ")
            }
        ),
    })
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, EmbedError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EmbedError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EmbedError::InvalidConfig {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn prompts_from_the_sentence_transformers_config() {
        let dir = dir_with(&[(
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": null}"#,
        )]);
        let prompts = Prompts::read(dir.path()).unwrap();
        assert_eq!(prompts.for_role(TextRole::Query), "query: ");
        assert_eq!(prompts.for_role(TextRole::Document), "passage: ");
        assert_eq!(prompts.for_role(TextRole::Raw), "");
    }

    #[test]
    fn no_file_or_no_prompts_means_none() {
        assert_eq!(
            Prompts::read(dir_with(&[]).path()).unwrap(),
            Prompts::default()
        );
        let dir = dir_with(&[(
            "config_sentence_transformers.json",
            r#"{"__version__": {}}"#,
        )]);
        assert_eq!(Prompts::read(dir.path()).unwrap(), Prompts::default());
    }

    #[test]
    fn a_prompt_that_is_not_a_string_is_an_error() {
        let dir = dir_with(&[(
            "config_sentence_transformers.json",
            r#"{"prompts": {"query": 3}}"#,
        )]);
        let err = Prompts::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("prompts.query must be a string"), "{err}");
    }

    #[test]
    fn pooling_other_than_mean_is_refused() {
        let mean = dir_with(&[(
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": false}"#,
        )]);
        check_mean_pooling(mean.path()).unwrap();
        check_mean_pooling(dir_with(&[]).path()).unwrap();
        let cls = dir_with(&[(
            "1_Pooling/config.json",
            r#"{"pooling_mode_mean_tokens": false, "pooling_mode_cls_token": true}"#,
        )]);
        let err = check_mean_pooling(cls.path()).unwrap_err().to_string();
        assert!(err.contains("pooling_mode_cls_token"), "{err}");
    }
}
