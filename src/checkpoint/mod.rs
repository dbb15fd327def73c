//! Checkpoints on disk: safetensors (single or sharded) with `config.json` and `tokenizer.json`,
//! or a GGUF file. Either way the result is a [`Checkpoint`]: a configuration, named tensors in
//! Hugging Face naming, and optionally a tokenizer.

pub mod config;
pub mod default_model;
pub mod gguf;
pub mod safetensors;
pub mod synthetic;
pub mod tensor;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use tensor::{Dtype, Tensor};
pub use tokenizer::Tokenizer;

use crate::error::{Error, Result};

/// A loaded checkpoint: configuration, tensors (Hugging Face names), tokenizer definition.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    path: PathBuf,
    config: ModelConfig,
    tensors: BTreeMap<String, Tensor>,
    tokenizer_json: Option<String>,
}

impl Checkpoint {
    /// Assembles a checkpoint from parts (used by the GGUF reader and by tests that build models).
    pub fn from_parts(
        path: PathBuf,
        config: ModelConfig,
        tensors: BTreeMap<String, Tensor>,
        tokenizer_json: Option<String>,
    ) -> Self {
        Checkpoint {
            path,
            config,
            tensors,
            tokenizer_json,
        }
    }

    /// Opens a checkpoint: a directory (config.json + model.safetensors or
    /// model.safetensors.index.json, optional tokenizer.json), a `.safetensors` file with
    /// config.json beside it, or a `.gguf` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_file() {
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                return gguf::open(path);
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let config = ModelConfig::from_file(&dir.join("config.json"))?;
            let mut tensors = BTreeMap::new();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".index.json"))
            {
                safetensors::read_sharded(path, &mut tensors)?;
            } else {
                safetensors::read_file(path, &mut tensors)?;
            }
            return Ok(Checkpoint {
                path: path.to_path_buf(),
                config,
                tensors,
                tokenizer_json: read_optional(&dir.join("tokenizer.json"))?,
            });
        }
        let config = ModelConfig::from_file(&path.join("config.json"))?;
        let mut tensors = BTreeMap::new();
        let index = path.join("model.safetensors.index.json");
        let single = path.join("model.safetensors");
        if index.is_file() {
            safetensors::read_sharded(&index, &mut tensors)?;
        } else if single.is_file() {
            safetensors::read_file(&single, &mut tensors)?;
        } else {
            return Err(Error::format(
                path,
                "no model.safetensors or model.safetensors.index.json in this directory",
            ));
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            config,
            tensors,
            tokenizer_json: read_optional(&path.join("tokenizer.json"))?,
        })
    }

    /// Where the checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The tensor called `name`, or a [`Error::MissingTensor`] naming the checkpoint.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })
    }

    /// Whether a tensor called `name` exists.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, Tensor> {
        &self.tensors
    }

    /// The tokenizer.json text, if the checkpoint carries one.
    pub fn tokenizer_json(&self) -> Option<&str> {
        self.tokenizer_json.as_deref()
    }

    /// Builds the tokenizer, if the checkpoint carries one.
    pub fn tokenizer(&self) -> Result<Option<Tokenizer>> {
        self.tokenizer_json
            .as_deref()
            .map(|json| Tokenizer::from_json_str(json, &self.config))
            .transpose()
    }

    /// Total bytes of tensor data as stored.
    pub fn size_bytes(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.len() * t.dtype().size())
            .sum()
    }

    /// Writes a Hugging Face style directory: `model.safetensors` (float tensors converted to
    /// `dtype`, quantized codes as stored), `config.json`, and `tokenizer.json` when present.
    /// The directory is created.
    pub fn save_hf(&self, dir: &Path, dtype: Dtype) -> Result<()> {
        self.write_dir(dir, Some(dtype))
    }

    /// Like [`Checkpoint::save_hf`], keeping every tensor in its stored dtype.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.write_dir(dir, None)
    }

    fn write_dir(&self, dir: &Path, dtype: Option<Dtype>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let converted: BTreeMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                let t = match dtype {
                    Some(d) if t.dtype().is_float() => t.to_dtype(d),
                    _ => t.clone(),
                };
                (n.clone(), t)
            })
            .collect();
        safetensors::write_file(&dir.join("model.safetensors"), &converted)?;
        let mut config = self.config.to_json();
        let float_dtype = dtype.or_else(|| {
            self.tensors
                .get("model.embed_tokens.weight")
                .map(|t| t.dtype())
        });
        config["torch_dtype"] = serde_json::json!(match float_dtype {
            Some(Dtype::F16) => "float16",
            Some(Dtype::BF16) => "bfloat16",
            _ => "float32",
        });
        write_text(
            &dir.join("config.json"),
            &serde_json::to_string_pretty(&config).expect("config serializes"),
        )?;
        if let Some(tok) = &self.tokenizer_json {
            write_text(&dir.join("tokenizer.json"), tok)?;
            let tok_config = tokenizer::tokenizer_config_json(tok, &self.config);
            write_text(
                &dir.join("tokenizer_config.json"),
                &serde_json::to_string_pretty(&tok_config).expect("serializes"),
            )?;
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}
