//! Stored business rules per placement (`DATA/rules.json`): the defaults a merchandiser
//! sets once, which every search or recommendation of that placement runs with, under the
//! request's own rules ([`Rules::over`]).

use crate::models;
use shelf_types::Rules;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// The file under the data directory.
pub const FILE: &str = "rules.json";

/// Where rules can be stored: searches with a query, and each recommendation placement.
pub const PLACEMENTS: [&str; 6] = [
    "search",
    "for_user",
    "similar_items",
    "bought_together",
    "recently_viewed",
    "trending",
];

/// What storing rules can refuse.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("unknown placement `{0}`: one of search, for_user, similar_items, bought_together, recently_viewed, trending")]
    UnknownPlacement(String),
    #[error("{0}")]
    Invalid(#[from] shelf_types::RecordError),
    #[error("storing the rules: {0:#}")]
    Io(anyhow::Error),
}

/// The stored rules, read once at start and written through on every change.
#[derive(Debug)]
pub struct StoredRules {
    data_dir: PathBuf,
    by_placement: RwLock<BTreeMap<String, Rules>>,
    /// Serialises changes, so the file is written without holding up the readers.
    writer: Mutex<()>,
}

impl StoredRules {
    /// Reads `DATA/rules.json` (none: no stored rules). A file that does not parse, or that
    /// holds an unknown placement or invalid rules, keeps the node from starting with an
    /// error naming it, rather than serving without the merchandiser's rules.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE);
        let by_placement: BTreeMap<String, Rules> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
        for (placement, rules) in &by_placement {
            check_placement(placement)
                .and_then(|()| Ok(rules.validate()?))
                .map_err(|e| anyhow::anyhow!("{}: {placement}: {e}", path.display()))?;
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            by_placement: RwLock::new(by_placement),
            writer: Mutex::new(()),
        })
    }

    /// Every placement's stored rules.
    pub fn all(&self) -> BTreeMap<String, Rules> {
        self.by_placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `request`'s rules on top of `placement`'s stored ones.
    pub fn apply(&self, placement: &str, request: Rules) -> Rules {
        let stored = self.by_placement.read().unwrap_or_else(|e| e.into_inner());
        match stored.get(placement) {
            Some(defaults) => request.over(defaults),
            None => request,
        }
    }

    /// Stores `rules` as `placement`'s (replacing what it had; empty rules remove them).
    /// Nothing changes when they are refused or cannot be written.
    pub fn set(&self, placement: &str, rules: Rules) -> Result<(), RulesError> {
        check_placement(placement)?;
        rules.validate()?;
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.all();
        if rules.is_empty() {
            next.remove(placement);
        } else {
            next.insert(placement.to_string(), rules);
        }
        self.save(&next).map_err(RulesError::Io)?;
        *self.by_placement.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    fn save(&self, all: &BTreeMap<String, Rules>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir)?;
        let text = serde_json::to_string_pretty(all).expect("rules serialise");
        models::write_atomically(&self.data_dir.join(FILE), &text)
    }
}

fn check_placement(placement: &str) -> Result<(), RulesError> {
    if PLACEMENTS.contains(&placement) {
        Ok(())
    } else {
        Err(RulesError::UnknownPlacement(placement.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Rules {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn stored_rules_survive_a_reopen_and_bad_ones_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let stored = StoredRules::open(dir.path()).unwrap();
        assert!(stored.all().is_empty());
        let block = rules(r#"{"block": ["a"]}"#);
        stored.set("for_user", block.clone()).unwrap();
        assert!(matches!(
            stored.set("home", block.clone()),
            Err(RulesError::UnknownPlacement(_))
        ));
        let conflict = rules(r#"{"pin": [{"id": "b", "position": 1}], "block": ["b"]}"#);
        assert!(matches!(
            stored.set("search", conflict),
            Err(RulesError::Invalid(_))
        ));
        let reopened = StoredRules::open(dir.path()).unwrap();
        assert_eq!(
            reopened.all(),
            BTreeMap::from([("for_user".into(), block.clone())])
        );
        assert_eq!(reopened.apply("for_user", Rules::default()), block);
        assert_eq!(reopened.apply("search", Rules::default()), Rules::default());
        // Empty rules remove a placement's.
        reopened.set("for_user", Rules::default()).unwrap();
        assert!(StoredRules::open(dir.path()).unwrap().all().is_empty());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), r#"{"home": {}}"#).unwrap();
        let e = StoredRules::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("rules.json") && e.contains("home"), "{e}");
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        assert!(StoredRules::open(dir.path()).is_err());
    }
}
