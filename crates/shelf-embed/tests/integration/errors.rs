//! Bad input and broken model directories give clear errors, never panics.

use crate::{encoder, model_dir};
use shelf_embed::{DevicePreference, EmbedConfig, EmbedError, SentenceEncoder};
use std::path::Path;

#[test]
fn empty_and_oversized_texts_are_rejected() {
    let err = encoder().embed(&["ok", "  "]).unwrap_err();
    assert!(matches!(err, EmbedError::EmptyText { index: 1 }), "{err}");
    let huge = "x".repeat(3 * 1024 * 1024);
    let err = encoder().embed(&[huge.as_str()]).unwrap_err();
    assert!(
        matches!(err, EmbedError::TextTooLong { index: 0, bytes, .. } if bytes == huge.len()),
        "{err}"
    );
    assert!(err.to_string().contains("3145728 bytes"));
}

/// A copy of the model directory with one file replaced (or removed when `contents` is None).
fn broken_copy(file: &str, contents: Option<&[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json", "model.safetensors"] {
        let target = dir.path().join(name);
        if name == file {
            if let Some(bytes) = contents {
                std::fs::write(&target, bytes).unwrap();
            }
        } else {
            // Hard links keep the 90 MB weights from being copied for every case.
            let source = model_dir().join(name);
            std::fs::hard_link(&source, &target)
                .or_else(|_| std::fs::copy(&source, &target).map(|_| ()))
                .unwrap();
        }
    }
    dir
}

fn load(dir: &Path) -> EmbedError {
    SentenceEncoder::load(dir, EmbedConfig::default()).unwrap_err()
}

#[test]
fn broken_model_directories_are_reported() {
    let missing = broken_copy("tokenizer.json", None);
    assert!(
        matches!(load(missing.path()), EmbedError::MissingFile { path } if path.ends_with("tokenizer.json"))
    );

    let not_bert = broken_copy(
        "config.json",
        Some(br#"{"model_type":"gpt2","n_embd":768}"#),
    );
    let err = load(not_bert.path());
    assert!(
        matches!(err, EmbedError::NotBert { ref model_type, .. } if model_type == "gpt2"),
        "{err}"
    );

    let bad_json = broken_copy("config.json", Some(b"{not json"));
    assert!(matches!(
        load(bad_json.path()),
        EmbedError::InvalidConfig { .. }
    ));

    let incomplete = broken_copy(
        "config.json",
        Some(br#"{"model_type":"bert","hidden_size":384}"#),
    );
    assert!(matches!(
        load(incomplete.path()),
        EmbedError::InvalidConfig { .. }
    ));

    let bad_tok = broken_copy("tokenizer.json", Some(b"{}"));
    assert!(matches!(load(bad_tok.path()), EmbedError::Tokenizer { .. }));

    let bad_weights = broken_copy(
        "model.safetensors",
        Some(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"),
    );
    let err = load(bad_weights.path());
    assert!(matches!(err, EmbedError::Weights { .. }), "{err}");

    let empty_weights = broken_copy("model.safetensors", Some(b""));
    assert!(matches!(
        load(empty_weights.path()),
        EmbedError::Weights { .. }
    ));
}

#[test]
fn weights_that_do_not_match_the_config_are_reported() {
    let config = std::fs::read_to_string(model_dir().join("config.json")).unwrap();
    let bigger = config.replace("\"hidden_size\": 384", "\"hidden_size\": 768");
    assert_ne!(config, bigger);
    let dir = broken_copy("config.json", Some(bigger.as_bytes()));
    let err = load(dir.path());
    assert!(matches!(err, EmbedError::Weights { .. }), "{err}");
}

#[test]
fn out_of_range_settings_are_rejected() {
    let err = SentenceEncoder::load(
        &model_dir(),
        EmbedConfig {
            max_tokens: Some(100_000),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("max_position_embeddings 512"),
        "{err}"
    );
}

/// Without a usable GPU, `cuda` is an error that names the device and why, and `auto` runs
/// on the CPU. CI runs this in the build without `cuda` and only type-checks it with `cuda`
/// (`make check-cuda`): a `cuda` test binary links the driver's libcuda, so it runs only
/// where the driver is installed.
#[test]
fn cuda_without_a_gpu_is_an_error_and_auto_falls_back_to_the_cpu() {
    if Path::new("/dev/nvidia0").exists() {
        eprintln!("skipped: this machine has an NVIDIA GPU (scripts/gpu-check.sh covers it)");
        return;
    }
    let cuda = EmbedConfig {
        device: DevicePreference::Cuda(0),
        ..EmbedConfig::default()
    };
    let err = SentenceEncoder::load(&model_dir(), cuda).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, EmbedError::Device { ref requested, .. } if requested == "cuda:0"),
        "{message}"
    );
    if cfg!(feature = "cuda") {
        // The driver is installed (the binary links it) but finds no usable device.
        assert!(
            message.contains("libcuda.so") || message.contains("CUDA"),
            "{message}"
        );
    } else {
        assert!(
            message.contains("built without the `cuda` feature"),
            "{message}"
        );
    }

    let auto = EmbedConfig {
        device: DevicePreference::Auto,
        ..EmbedConfig::default()
    };
    let encoder = SentenceEncoder::load(&model_dir(), auto).unwrap();
    assert!(encoder.device().is_cpu());
    assert_eq!(encoder.embed(&["still works"]).unwrap()[0].len(), 384);
}
