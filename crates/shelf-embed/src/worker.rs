//! The embedding worker: a dedicated OS thread owns the model and serves requests from a
//! bounded channel, coalescing queued requests into shared batches (with a short bounded
//! wait once requests queue up); replies go back on oneshot channels.

use crate::Prompts;
use crate::{EmbedConfig, EmbedError, Quantization, SentenceEncoder};
use shelf_types::{BoxFuture, Embedding, TextEmbedder, TextRole};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the worker before callers feel backpressure.
const QUEUE_CAPACITY: usize = 256;
/// Queued requests are merged into one `embed` call up to this many texts.
const MAX_COALESCED_TEXTS: usize = 512;

type Reply = oneshot::Sender<Result<Vec<Embedding>, EmbedError>>;

struct Job {
    role: TextRole,
    texts: Vec<String>,
    reply: Reply,
}

#[derive(Debug)]
struct Info {
    model_id: String,
    dim: usize,
    max_tokens: usize,
    device: String,
    quantization: Quantization,
    prompts: Prompts,
}

/// A cheap, cloneable handle to a model running on its own thread.
///
/// The thread stops when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct Embedder {
    tx: mpsc::Sender<Job>,
    info: Arc<Info>,
    passes: Arc<AtomicU64>,
}

impl Embedder {
    /// Starts the worker thread and loads the model from `dir` on it (CUDA contexts belong
    /// to the thread that uses them). Blocks until the model is loaded or has failed to load.
    pub fn spawn(dir: PathBuf, config: EmbedConfig) -> Result<Self, EmbedError> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let passes = Arc::new(AtomicU64::new(0));
        let worker_passes = Arc::clone(&passes);
        std::thread::Builder::new()
            .name("shelf-embed".into())
            .spawn(move || match SentenceEncoder::load(&dir, config.clone()) {
                Ok(encoder) => {
                    let info = Info {
                        model_id: encoder.model_id().to_owned(),
                        dim: encoder.dim(),
                        max_tokens: encoder.max_tokens(),
                        device: format!("{:?}", encoder.device()),
                        quantization: encoder.quantization(),
                        prompts: encoder.prompts().clone(),
                    };
                    if ready_tx.send(Ok(info)).is_ok() {
                        let coalescing = Coalescing {
                            wait: config.batch_wait,
                            target_texts: config.batch_size.min(MAX_COALESCED_TEXTS),
                        };
                        serve(&encoder, rx, coalescing, &worker_passes);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| EmbedError::Device {
                requested: "worker thread".into(),
                reason: e.to_string(),
            })?;
        let info = ready_rx.recv().map_err(|_| EmbedError::WorkerGone)??;
        Ok(Self {
            tx,
            info: Arc::new(info),
            passes,
        })
    }

    /// Embeds `texts` as given, no prompt (one vector per text, in input order) without
    /// blocking the runtime.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        self.embed_as(TextRole::Raw, texts).await
    }

    /// Embeds `texts` with the model's prompt for `role` in front of each.
    pub async fn embed_as(
        &self,
        role: TextRole,
        texts: Vec<String>,
    ) -> Result<Vec<Embedding>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { role, texts, reply })
            .await
            .map_err(|_| EmbedError::WorkerGone)?;
        rx.await.map_err(|_| EmbedError::WorkerGone)?
    }

    /// Blocking variant of [`Embedder::embed`] for code outside an async runtime.
    ///
    /// # Panics
    /// When called from within an async runtime (use `embed` there).
    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Embedding>, EmbedError> {
        self.embed_blocking_as(TextRole::Raw, texts)
    }

    /// Blocking variant of [`Embedder::embed_as`].
    ///
    /// # Panics
    /// When called from within an async runtime (use `embed_as` there).
    pub fn embed_blocking_as(
        &self,
        role: TextRole,
        texts: Vec<String>,
    ) -> Result<Vec<Embedding>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .blocking_send(Job { role, texts, reply })
            .map_err(|_| EmbedError::WorkerGone)?;
        rx.blocking_recv().map_err(|_| EmbedError::WorkerGone)?
    }

    /// Name of the model.
    pub fn model_id(&self) -> &str {
        &self.info.model_id
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.info.dim
    }

    /// Truncation length in tokens.
    pub fn max_tokens(&self) -> usize {
        self.info.max_tokens
    }

    /// Forward passes run so far: each serves every request it coalesced.
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }

    /// The device the model runs on, for logs.
    pub fn device(&self) -> &str {
        &self.info.device
    }

    /// How the linear layers' weights are held (`Auto` resolved at load).
    pub fn quantization(&self) -> Quantization {
        self.info.quantization
    }

    /// The prompts in front of queries and documents.
    pub fn prompts(&self) -> &Prompts {
        &self.info.prompts
    }
}

impl TextEmbedder for Embedder {
    type Error = EmbedError;

    fn model_id(&self) -> &str {
        Embedder::model_id(self)
    }

    fn dim(&self) -> usize {
        Embedder::dim(self)
    }

    fn embed_as(
        &self,
        role: TextRole,
        texts: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<Embedding>, EmbedError>> {
        Box::pin(Embedder::embed_as(self, role, texts))
    }

    fn is_invalid_input(error: &EmbedError) -> bool {
        error.is_invalid_input()
    }
}

/// The job with the prompt of its role in front of each text (checked as given, before).
fn with_prompt(prompts: &Prompts, mut job: Job) -> Job {
    let prompt = prompts.for_role(job.role);
    if !prompt.is_empty() {
        for text in &mut job.texts {
            text.insert_str(0, prompt);
        }
    }
    job
}

/// How the worker gathers a pass: everything already queued, and, once requests have been
/// queueing behind each other, up to `wait` more for the pass to reach `target_texts`.
#[derive(Clone, Copy, Debug)]
struct Coalescing {
    wait: Duration,
    target_texts: usize,
}

/// The worker loop: take a job, merge whatever else is queued (waiting briefly under load),
/// run, answer each job.
fn serve(
    encoder: &SentenceEncoder,
    mut rx: mpsc::Receiver<Job>,
    coalescing: Coalescing,
    passes: &AtomicU64,
) {
    // Only for the bounded wait; the thread blocks on the channel otherwise.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime with only a timer builds");
    // Whether the last pass found other requests queued behind its first one.
    let mut loaded = false;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = Vec::new();
        let mut queued = 0;
        let mut next = Some(first);
        let deadline =
            (loaded && !coalescing.wait.is_zero()).then(|| Instant::now() + coalescing.wait);
        while let Some(job) = next.take() {
            // A bad request fails alone; it never spoils the batch it would have joined.
            if let Err(e) = encoder.validate_texts(&job.texts) {
                let _ = job.reply.send(Err(e));
            } else {
                queued += job.texts.len();
                jobs.push(with_prompt(encoder.prompts(), job));
            }
            if queued >= MAX_COALESCED_TEXTS {
                break;
            }
            next = rx.try_recv().ok();
            if next.is_none() && queued < coalescing.target_texts {
                if let Some(deadline) = deadline {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    next = clock
                        .block_on(async { tokio::time::timeout_at(deadline, rx.recv()).await })
                        .ok()
                        .flatten();
                }
            }
        }
        loaded = jobs.len() > 1;
        if jobs.is_empty() {
            continue;
        }
        passes.fetch_add(1, Ordering::Relaxed);
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let result = catch_unwind(AssertUnwindSafe(|| encoder.embed_checked(&texts)))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(EmbedError::Inference(candle_core::Error::Msg(format!(
                    "model panicked: {msg}"
                ))))
            });
        match result {
            Ok(vectors) => {
                let mut vectors = vectors.into_iter().map(Embedding);
                for job in jobs {
                    let mine = vectors.by_ref().take(job.texts.len()).collect();
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedding batch failed");
                let msg = e.to_string();
                for job in jobs {
                    let err = EmbedError::Inference(candle_core::Error::Msg(msg.clone()));
                    let _ = job.reply.send(Err(err));
                }
            }
        }
    }
}
