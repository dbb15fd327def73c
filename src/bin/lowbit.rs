//! The `lowbit` command line: argument parsing and progress display over the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use lowbit::backend::{with_decoder, Device};
use lowbit::checkpoint::{default_model, Checkpoint, Dtype};
use lowbit::eval::TaskOptions;
use lowbit::model::{GenerateParams, Model, TextStream};
use lowbit::quant::apply::checkpoint_from_model;
use lowbit::quant::awq::{AwqClipOptions, AwqOptions};
use lowbit::quant::calibration::{quantize_sequential, CalibrationSet, CalibrationSource, Method};
use lowbit::quant::smoothquant::DEFAULT_SMOOTHING_ALPHA;
use lowbit::quant::{
    quantize_checkpoint, quantize_model, GptqOptions, QuantRules, QuantScheme, RtnOptions,
};

const USAGE: &str = "\
lowbit: load, run and score low-bit LLMs

Usage:
  lowbit generate [--model PATH] --prompt TEXT [--max-tokens N] [--temperature T]
                  [--top-k K] [--top-p P] [--seed S] [--chat] [--dtype f32|bf16|f16]
                  [--device cpu|cuda]
  lowbit info     [--model PATH]
  lowbit convert  --model FILE.gguf --out DIR [--dtype f32|bf16|f16]
  lowbit eval     [--model PATH] --tasks LIST [--data-dir DIR] [--limit N] [--seed S]
                  [--num-fewshot N] [--max-length N] [--scheme SCHEME] [--out FILE]
                  [--no-samples] [--device cpu|cuda]
  lowbit quantize [--model PATH] --scheme SCHEME --out DIR [--mse]
                  [--method rtn|gptq|awq|smoothquant|smoothquant+gptq]
                  [--override PATTERN=SCHEME|PATTERN=skip]...
                  [--calib FILE[:WEIGHT],... --samples N --seq-len L --seed S]
                  [--save-calib FILE.jsonl]
                  [--act-order] [--alpha A] [--no-clip]
  lowbit study    [STUDY.toml] [--out DIR] [--device cpu|cuda]
  lowbit export   --model DIR --out DIR [--format compressed-tensors] [--dtype f32|bf16|f16]
  lowbit bench    [--model PATH] [--schemes LIST] [--prompt-tokens N] [--decode-tokens N] [--json]
                  [--device cpu|cuda] [--batch LIST]
  lowbit fetch    (download and convert the default model; prints its directory)

--device cuda runs the forward pass on the first NVIDIA GPU (lowbit built with --features cuda):
weights uploaded once, activations bf16 into the projections (quantized per token for w8a8 and
w8a8-fp8 schemes), KV cache and logits f32.

PATH is a Hugging Face directory (config.json + safetensors), a .safetensors file or a .gguf
file. Quantized checkpoints load in lowbit's own layout or in the compressed-tensors, GPTQ
(AutoGPTQ/GPTQModel) and AWQ (GEMM) layouts; `export` writes compressed-tensors, which vLLM and
transformers load. Without --model, the default model (SmolLM2-135M-Instruct) is used, fetched on first use.

SCHEME: w4a16-g128, w4a16-g128-asym, w4a16-g32, w8a16, w8a8, w4a8-g128, nf4, nf4-dq, fp4,
fp4-dq, fp8, fp8-block, w8a8-fp8, w8a8-fp8-block. Every linear layer of the decoder blocks is
quantized; embeddings and the LM head are kept unless an --override names them (last match wins,
`*` matches anything), e.g. --override '*.down_proj=w8a16' --override 'model.layers.0.*=skip'.
";

/// Parsed `--name value` options and `--flag`s.
struct Args {
    options: Vec<(String, Option<String>)>,
}

const FLAGS: &[&str] = &[
    "--chat",
    "--help",
    "--json",
    "--mse",
    "--no-samples",
    "--act-order",
    "--no-clip",
];

impl Args {
    fn parse(raw: &[String]) -> Result<Self, String> {
        let mut options = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            let name = &raw[i];
            if !name.starts_with("--") {
                return Err(format!("unexpected argument '{name}'"));
            }
            if FLAGS.contains(&name.as_str()) {
                options.push((name.clone(), None));
                i += 1;
            } else {
                let value = raw
                    .get(i + 1)
                    .ok_or_else(|| format!("{name} needs a value"))?;
                options.push((name.clone(), Some(value.clone())));
                i += 2;
            }
        }
        Ok(Args { options })
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.options
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    }

    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{name}: cannot parse '{v}'")),
        }
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        for (name, _) in &self.options {
            if !known.contains(&name.as_str()) && name != "--help" {
                return Err(format!("unknown option {name}"));
            }
        }
        Ok(())
    }
}

fn parse_dtype(value: Option<&str>) -> Result<Option<Dtype>, String> {
    match value {
        None => Ok(None),
        Some("f32") => Ok(Some(Dtype::F32)),
        Some("bf16") => Ok(Some(Dtype::BF16)),
        Some("f16") => Ok(Some(Dtype::F16)),
        Some(other) => Err(format!("--dtype: expected f32, bf16 or f16, got '{other}'")),
    }
}

fn device(args: &Args) -> Result<Device, String> {
    Device::parse(args.value("--device").unwrap_or("cpu")).map_err(|e| e.to_string())
}

fn model_path(args: &Args) -> Result<PathBuf, String> {
    match args.value("--model") {
        Some(p) => Ok(PathBuf::from(p)),
        None => default_model::ensure().map_err(|e| e.to_string()),
    }
}

fn load(args: &Args) -> Result<Model, String> {
    let path = model_path(args)?;
    let dtype = parse_dtype(args.value("--dtype"))?;
    let started = Instant::now();
    eprint!("lowbit: loading {} ...", path.display());
    let loaded = Checkpoint::open(&path).and_then(|c| Model::from_checkpoint(&c, dtype));
    let model = loaded.map_err(|e| {
        eprintln!();
        e.to_string()
    })?;
    eprintln!(
        " {:.1}M parameters in {:.2} s",
        model.parameter_count() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(model)
}

/// ChatML, the template of SmolLM2 and Qwen instruct models.
fn chat_prompt(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

fn generate(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "--model",
        "--prompt",
        "--max-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--seed",
        "--chat",
        "--dtype",
        "--device",
    ])?;
    let device = device(args)?;
    let prompt = args
        .value("--prompt")
        .ok_or("generate needs --prompt TEXT")?;
    let params = GenerateParams {
        max_new_tokens: args.parsed("--max-tokens", 64)?,
        temperature: args.parsed("--temperature", 0.0)?,
        top_k: args.parsed("--top-k", 0)?,
        top_p: args.parsed("--top-p", 1.0)?,
        seed: args.parsed("--seed", 0)?,
        stop_at_eos: true,
    };
    let model = load(args)?;
    let tokenizer = model.require_tokenizer().map_err(|e| e.to_string())?;
    let text = if args.flag("--chat") {
        chat_prompt(prompt)
    } else {
        prompt.to_string()
    };
    let ids = tokenizer.encode(&text, true).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut first_token = None;
    let mut stream = TextStream::new(tokenizer);
    let mut stdout = std::io::stdout();
    if !args.flag("--chat") {
        let _ = write!(stdout, "{prompt}");
    }
    let mut failure = None;
    let out = with_decoder(&model, device, |decoder, _| {
        lowbit::model::generate(decoder, std::slice::from_ref(&ids), &params, |_, token| {
            first_token.get_or_insert_with(|| started.elapsed());
            match stream.push(token) {
                Ok(piece) => {
                    let _ = write!(stdout, "{piece}");
                    let _ = stdout.flush();
                    true
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    false
                }
            }
        })
    })
    .and_then(|r| r)
    .map_err(|e| e.to_string())?;
    if let Some(e) = failure {
        return Err(e);
    }
    println!();
    let total = started.elapsed().as_secs_f64();
    let n = out[0].tokens.len();
    let ttft = first_token.map_or(0.0, |d| d.as_secs_f64());
    let decode_rate = if n > 1 {
        (n - 1) as f64 / (total - ttft)
    } else {
        0.0
    };
    eprintln!(
        "lowbit: {} prompt tokens, {n} generated ({:?}); time to first token {:.0} ms, \
         {decode_rate:.1} tokens/s",
        ids.len(),
        out[0].finish_reason,
        ttft * 1e3
    );
    Ok(())
}

fn info(args: &Args) -> Result<(), String> {
    args.check_known(&["--model", "--dtype"])?;
    let path = model_path(args)?;
    let checkpoint = Checkpoint::open(&path).map_err(|e| e.to_string())?;
    let model = Model::from_checkpoint(&checkpoint, None).map_err(|e| e.to_string())?;
    let c = model.config();
    let mut dtypes: Vec<String> = checkpoint
        .tensors()
        .values()
        .map(|t| format!("{:?}", t.dtype()))
        .collect();
    dtypes.sort();
    dtypes.dedup();
    println!("path:              {}", path.display());
    println!(
        "architecture:      {:?} ({})",
        c.architecture,
        c.architecture.hf_class()
    );
    println!(
        "parameters:        {:.2} M",
        model.parameter_count() as f64 / 1e6
    );
    println!(
        "tensors:           {} ({})",
        checkpoint.tensors().len(),
        dtypes.join(", ")
    );
    println!(
        "stored size:       {:.1} MB",
        checkpoint.size_bytes() as f64 / 1e6
    );
    println!("layers:            {}", c.num_hidden_layers);
    println!(
        "hidden / mlp:      {} / {}",
        c.hidden_size, c.intermediate_size
    );
    println!(
        "heads (q / kv):    {} / {} of width {}",
        c.num_attention_heads, c.num_key_value_heads, c.head_dim
    );
    println!("vocabulary:        {}", c.vocab_size);
    println!("context:           {}", c.max_position_embeddings);
    println!(
        "rope:              theta {} {:?}",
        c.rope_theta, c.rope_scaling
    );
    println!("tied embeddings:   {}", c.tie_word_embeddings);
    let mut schemes: std::collections::BTreeMap<String, usize> = Default::default();
    for b in model.blocks() {
        for l in b.linears() {
            let name = l.weight.scheme().map_or("dense".into(), |s| s.to_string());
            *schemes.entry(name).or_default() += 1;
        }
    }
    let head = model.lm_head().weight.scheme();
    let summary: Vec<String> = schemes.iter().map(|(s, n)| format!("{n} x {s}")).collect();
    println!(
        "linear layers:     {} (LM head {})",
        summary.join(", "),
        head.map_or("dense".into(), |s| s.to_string())
    );
    println!(
        "weights in memory: {:.1} MB",
        model.weight_bytes() as f64 / 1e6
    );
    match model.tokenizer() {
        Some(t) => println!("tokenizer:         {} entries", t.vocab_size()),
        None => println!("tokenizer:         none"),
    }
    Ok(())
}

fn convert(args: &Args) -> Result<(), String> {
    args.check_known(&["--model", "--out", "--dtype"])?;
    let input = args.value("--model").ok_or("convert needs --model FILE")?;
    let out = args.value("--out").ok_or("convert needs --out DIR")?;
    let dtype = parse_dtype(args.value("--dtype"))?.unwrap_or(Dtype::F32);
    let started = Instant::now();
    eprintln!("lowbit: reading {input} ...");
    let checkpoint = Checkpoint::open(input).map_err(|e| e.to_string())?;
    eprintln!("lowbit: writing {out} ({dtype:?}) ...");
    checkpoint
        .save_hf(std::path::Path::new(out), dtype)
        .map_err(|e| e.to_string())?;
    eprintln!("lowbit: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs a quantization study (the default one without a file) and writes its report.
fn study(raw: &[String]) -> Result<(), String> {
    let (file, rest) = match raw.first() {
        Some(f) if !f.starts_with("--") => (Some(f.as_str()), &raw[1..]),
        _ => (None, raw),
    };
    let args = Args::parse(rest)?;
    args.check_known(&["--out", "--device"])?;
    let mut config = match file {
        Some(f) => lowbit::study::StudyConfig::from_file(std::path::Path::new(f))
            .map_err(|e| e.to_string())?,
        None => lowbit::study::StudyConfig::default(),
    };
    if let Some(out) = args.value("--out") {
        config.output = PathBuf::from(out);
    }
    // Checked by `study::run` before any work.
    if let Some(device) = args.value("--device") {
        config.device = device.to_string();
    }
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let mut last = String::new();
    let mut progress = |i: usize, n: usize, cell: &lowbit::study::Cell, what: &str| {
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if i > 0 && i < n {
            format!(", about {:.0} s left", elapsed / i as f64 * (n - i) as f64)
        } else {
            String::new()
        };
        let filled = i * 24 / n.max(1);
        let line = format!(
            "lowbit: [{}{}] {i}/{n} {} {}: {what} ({elapsed:.0} s{eta})",
            "#".repeat(filled),
            ".".repeat(24 - filled),
            cell.model,
            cell.label()
        );
        if terminal {
            eprint!("\r{line:<110}");
        } else if line != last {
            eprintln!("{line}");
        }
        last = line;
    };
    let results = lowbit::study::run(&config, &mut progress).map_err(|e| e.to_string())?;
    if terminal {
        eprintln!();
    }
    let written =
        lowbit::study::report::write_all(&results, &config.output).map_err(|e| e.to_string())?;
    print!("{}", lowbit::study::report::markdown(&results));
    for path in written {
        eprintln!("lowbit: wrote {}", path.display());
    }
    Ok(())
}

/// Writes a quantized checkpoint in the compressed-tensors layout (any layout lowbit reads in).
fn export(args: &Args) -> Result<(), String> {
    args.check_known(&["--model", "--out", "--format", "--dtype"])?;
    let input = model_path(args)?;
    let out = args.value("--out").ok_or("export needs --out DIR")?;
    let format = args.value("--format").unwrap_or("compressed-tensors");
    if format != "compressed-tensors" {
        return Err(format!(
            "export format '{format}': lowbit exports compressed-tensors"
        ));
    }
    let dtype = parse_dtype(args.value("--dtype"))?;
    let source = Checkpoint::open(&input).map_err(|e| e.to_string())?;
    let lowbit_layout = lowbit::io::import(&source).map_err(|e| e.to_string())?;
    let exported =
        lowbit::io::compressed_tensors::export(&lowbit_layout, dtype).map_err(|e| e.to_string())?;
    exported
        .save(std::path::Path::new(out))
        .map_err(|e| e.to_string())?;
    eprintln!("lowbit: wrote {out} (compressed-tensors)");
    Ok(())
}

/// Runs benchmark tasks and prints lm-eval style results; writes the full JSON with `--out`.
fn eval(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "--model",
        "--tasks",
        "--data-dir",
        "--limit",
        "--seed",
        "--num-fewshot",
        "--fewshot-seed",
        "--max-length",
        "--context",
        "--stride",
        "--max-gen-tokens",
        "--scheme",
        "--out",
        "--no-samples",
        "--dtype",
        "--device",
    ])?;
    let device = device(args)?;
    let tasks: Vec<String> = args
        .value("--tasks")
        .ok_or_else(|| {
            format!(
                "eval needs --tasks (any of {}, or text:PATH)",
                lowbit::eval::TASKS.join(",")
            )
        })?
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let data_dir = args
        .value("--data-dir")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LOWBIT_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("data"));
    let optional = |name: &str| -> Result<Option<usize>, String> {
        args.value(name)
            .map(|v| v.parse().map_err(|_| format!("{name}: cannot parse '{v}'")))
            .transpose()
    };
    let defaults = TaskOptions::default();
    // Perplexity windows default to at most --max-length tokens, so `--max-length N` alone
    // bounds every model input.
    let max_length = optional("--max-length")?;
    let window = defaults
        .context_length
        .min(max_length.unwrap_or(usize::MAX));
    let options = TaskOptions {
        data_dir,
        limit: optional("--limit")?,
        subsample_seed: args
            .value("--seed")
            .map(|v| v.parse().map_err(|_| format!("--seed: cannot parse '{v}'")))
            .transpose()?,
        num_fewshot: optional("--num-fewshot")?,
        fewshot_seed: args.parsed("--fewshot-seed", defaults.fewshot_seed)?,
        context_length: args.parsed("--context", window)?,
        stride: args.parsed("--stride", window)?,
        max_gen_tokens: args.parsed("--max-gen-tokens", defaults.max_gen_tokens)?,
        keep_samples: !args.flag("--no-samples"),
        max_length,
    };
    let scheme = args
        .value("--scheme")
        .map(QuantScheme::parse)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut model = load(args)?;
    if let Some(scheme) = scheme {
        quantize_model(&mut model, &QuantRules::new(scheme), &RtnOptions::default())
            .map_err(|e| e.to_string())?;
        eprintln!("lowbit: quantized in memory with {scheme} (RTN)");
    }
    let started = Instant::now();
    let mut progress = |i: usize, n: usize, task: &str| {
        eprintln!(
            "lowbit: [{}/{n}] {task} ({:.0} s elapsed)",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    };
    let results = with_decoder(&model, device, |decoder, place| {
        eprintln!("lowbit: evaluating on {place}");
        lowbit::eval::evaluate_on(decoder, &tasks, &options, &mut progress)
    })
    .and_then(|r| r)
    .map_err(|e| e.to_string())?;
    let name = args.value("--model").unwrap_or("default model");
    let json = lowbit::eval::to_json(&results, name, started);
    println!(
        "{:<16} {:<32} {:>10} {:>10}",
        "task", "metric", "value", "stderr"
    );
    for r in &results {
        for (metric, value) in &r.metrics {
            let stderr = r
                .stderr
                .get(metric)
                .map_or("".into(), |s| format!("{s:.4}"));
            println!(
                "{:<16} {:<32} {:>10.4} {:>10}",
                r.task, metric, value, stderr
            );
        }
        println!(
            "{:<16} {:<32} {:>10.1} ({} documents, {} tokens, {:.1} s)",
            r.task,
            "tokens/s",
            r.tokens as f64 / r.seconds.max(1e-9),
            r.documents,
            r.tokens,
            r.seconds
        );
    }
    if let Some(out) = args.value("--out") {
        let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
        std::fs::write(out, text).map_err(|e| format!("{out}: {e}"))?;
        eprintln!("lowbit: wrote {out}");
    }
    Ok(())
}

fn quantize(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "--model",
        "--scheme",
        "--out",
        "--method",
        "--mse",
        "--override",
        "--calib",
        "--save-calib",
        "--samples",
        "--seq-len",
        "--seed",
        "--act-order",
        "--alpha",
        "--no-clip",
    ])?;
    let scheme = args
        .value("--scheme")
        .ok_or("quantize needs --scheme SCHEME")?;
    let out = args.value("--out").ok_or("quantize needs --out DIR")?;
    let method = args.value("--method").unwrap_or("rtn");
    if !matches!(
        method,
        "rtn" | "gptq" | "awq" | "smoothquant" | "smoothquant+gptq"
    ) {
        return Err(format!(
            "--method {method}: unknown (available: rtn, gptq, awq, smoothquant, \
             smoothquant+gptq)"
        ));
    }
    let mut rules = QuantRules::new(QuantScheme::parse(scheme).map_err(|e| e.to_string())?);
    for o in args.values("--override") {
        rules.push_override(o).map_err(|e| e.to_string())?;
    }
    let options = RtnOptions {
        mse_clip: args.flag("--mse"),
    };
    let path = model_path(args)?;
    let started = Instant::now();
    let checkpoint = Checkpoint::open(&path).map_err(|e| e.to_string())?;
    let terminal = std::io::stderr().is_terminal();
    let mut timer: Option<Instant> = None;
    let mut report = |done: usize, total: usize, layer: &str| {
        // The clock starts at the first report; the rate is over the projections since then,
        // which span whole layers (statistics, search and quantization) once past the first.
        let since = *timer.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed().as_secs_f64();
        let status = if done > 1 {
            let left = elapsed / (done - 1) as f64 * (total - done) as f64;
            format!("{done}/{total} {layer} (~{left:.0} s left)")
        } else {
            format!("{done}/{total} {layer}")
        };
        if terminal {
            eprint!("\rlowbit: quantized {status:<72}");
        } else if done == total || layer.ends_with("down_proj") {
            eprintln!("lowbit: quantized {status}");
        }
        true
    };
    let quantized = if method == "rtn" {
        quantize_checkpoint(&checkpoint, &rules, &options, &mut report)
            .map_err(|e| e.to_string())?
    } else {
        let calib = args
            .value("--calib")
            .ok_or_else(|| format!("--method {method} needs --calib FILE[:WEIGHT],..."))?;
        let sources = calib
            .split(',')
            .map(|part| {
                let (path, weight) = match part.rsplit_once(':') {
                    Some((p, w)) if w.parse::<f64>().is_ok() => (p, w.parse().unwrap_or(1.0)),
                    _ => (part, 1.0),
                };
                CalibrationSource {
                    path: PathBuf::from(path),
                    weight,
                }
            })
            .collect::<Vec<_>>();
        let mut model = Model::from_checkpoint(&checkpoint, None).map_err(|e| e.to_string())?;
        let calibration = CalibrationSet::from_sources(
            model.require_tokenizer().map_err(|e| e.to_string())?,
            &sources,
            args.parsed("--samples", 128)?,
            args.parsed("--seq-len", 512)?,
            args.parsed("--seed", 0)?,
        )
        .map_err(|e| e.to_string())?;
        eprintln!(
            "lowbit: calibrating on {} samples, {} tokens",
            calibration.samples.len(),
            calibration.tokens()
        );
        if let Some(path) = args.value("--save-calib") {
            calibration
                .write_jsonl(std::path::Path::new(path))
                .map_err(|e| e.to_string())?;
            eprintln!("lowbit: wrote the calibration tokens to {path}");
        }
        let gptq = GptqOptions {
            act_order: args.flag("--act-order"),
            ..GptqOptions::default()
        };
        let alpha = args.parsed("--alpha", DEFAULT_SMOOTHING_ALPHA)?;
        let calibrated = match method {
            "awq" => Method::Awq {
                search: AwqOptions::default(),
                clip: (!args.flag("--no-clip")).then(AwqClipOptions::default),
            },
            "smoothquant" => Method::SmoothQuant { alpha, gptq: None },
            "smoothquant+gptq" => Method::SmoothQuant {
                alpha,
                gptq: Some(gptq),
            },
            _ => Method::Gptq(gptq),
        };
        quantize_sequential(&mut model, &calibration, &rules, &calibrated, &mut report)
            .map_err(|e| e.to_string())?;
        checkpoint_from_model(&model, &checkpoint, &rules, method)
    };
    if terminal {
        eprintln!();
    }
    quantized
        .save(std::path::Path::new(out))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "lowbit: wrote {out}: {:.1} MB (from {:.1} MB) in {:.1} s",
        quantized.size_bytes() as f64 / 1e6,
        checkpoint.size_bytes() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Schemes `lowbit bench` measures without --schemes.
const BENCH_SCHEMES: &str = "w4a16-g128,w8a16,nf4,fp8,w8a8";
/// The GPU kernels are weight-only (no w8a8).
const BENCH_SCHEMES_CUDA: &str = "w4a16-g128,w8a16,nf4,fp8";

/// Measures f32, bf16 and each RTN-quantized scheme in turn. Each row builds its model from a
/// freshly opened checkpoint and drops both before the next, and the peak RSS is reset once the
/// model is built, so a row's peak is its own inference footprint. Quantized rows quantize the
/// decoder projections of the bf16 model (embedding and LM head stay bf16).
fn bench(args: &Args) -> Result<(), String> {
    args.check_known(&[
        "--model",
        "--schemes",
        "--prompt-tokens",
        "--decode-tokens",
        "--json",
        "--device",
        "--batch",
    ])?;
    let device = device(args)?;
    let default_schemes = match device {
        Device::Cpu => BENCH_SCHEMES,
        Device::Cuda => BENCH_SCHEMES_CUDA,
    };
    let schemes = args
        .value("--schemes")
        .unwrap_or(default_schemes)
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| QuantScheme::parse(s).map_err(|e| format!("--schemes: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let batches = args
        .value("--batch")
        .unwrap_or("1")
        .split(',')
        .map(|b| match b.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--batch: '{b}' is not a positive number")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt_tokens: usize = args.parsed("--prompt-tokens", 64)?;
    let decode_tokens: usize = args.parsed("--decode-tokens", 16)?;
    if prompt_tokens == 0 || decode_tokens == 0 {
        return Err("--prompt-tokens and --decode-tokens must be at least 1".into());
    }
    let json = args.flag("--json");
    let path = model_path(args)?;
    // Opened here only to fail early on a bad path or a run longer than the context.
    let context = Checkpoint::open(&path)
        .map_err(|e| e.to_string())?
        .config()
        .max_position_embeddings;
    if prompt_tokens.saturating_add(decode_tokens) > context {
        return Err(format!(
            "{prompt_tokens} prompt + {decode_tokens} decode tokens exceed the model's context \
             of {context} positions"
        ));
    }
    let disk_bytes = lowbit::bench::checkpoint_disk_bytes(&path).map_err(|e| e.to_string())?;
    // The GPU runs dense weights as bf16, so an f32 row would repeat the bf16 one there.
    let mut rows: Vec<(Dtype, Option<QuantScheme>)> = match device {
        Device::Cpu => vec![(Dtype::F32, None), (Dtype::BF16, None)],
        Device::Cuda => vec![(Dtype::BF16, None)],
    };
    rows.extend(schemes.into_iter().map(|s| (Dtype::BF16, Some(s))));
    if !json {
        eprintln!(
            "lowbit: benchmarking {} on {}: {prompt_tokens} prompt tokens, {decode_tokens} \
             decode tokens per sequence",
            path.display(),
            match device {
                Device::Cpu => format!("the CPU ({} threads)", rayon::current_num_threads()),
                Device::Cuda => "the GPU".to_string(),
            }
        );
        println!(
            "{:<16} {:>5} {:>9} {:>11} {:>13} {:>14} {:>9} {:>12}",
            "scheme",
            "batch",
            "size MB*",
            "weights MB",
            "decode tok/s",
            "prefill tok/s",
            "TTFT ms",
            "peak RSS MB"
        );
    }
    let mut peak_is_per_row = true;
    for (dtype, scheme) in rows {
        let name = scheme.map_or_else(|| format!("{dtype:?}").to_lowercase(), |s| s.name());
        let started = Instant::now();
        let checkpoint = Checkpoint::open(&path).map_err(|e| e.to_string())?;
        let mut model =
            Model::from_checkpoint(&checkpoint, Some(dtype)).map_err(|e| format!("{name}: {e}"))?;
        if let Some(scheme) = scheme {
            quantize_model(&mut model, &QuantRules::new(scheme), &RtnOptions::default())
                .map_err(|e| format!("{name}: {e}"))?;
        }
        drop(checkpoint);
        let prepared_s = started.elapsed().as_secs_f64();
        lowbit::bench::release_free_memory();
        peak_is_per_row &= lowbit::bench::reset_peak_rss();
        let reports = with_decoder(&model, device, |decoder, _| {
            batches
                .iter()
                .map(|&batch| {
                    lowbit::bench::measure_on(decoder, prompt_tokens, decode_tokens, batch)
                })
                .collect::<lowbit::Result<Vec<_>>>()
        })
        .and_then(|r| r)
        .map_err(|e| format!("{name}: {e}"))?;
        drop(model);
        for mut report in reports {
            if scheme.is_none() && device == Device::Cpu {
                report.checkpoint_bytes = Some(disk_bytes);
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).map_err(|e| e.to_string())?
                );
                continue;
            }
            let mb = |bytes: u64| bytes as f64 / 1e6;
            let size = report.checkpoint_bytes.unwrap_or(report.weight_bytes);
            let peak = report
                .peak_rss_bytes
                .map_or("n/a".to_string(), |b| format!("{:.1}", mb(b)));
            println!(
                "{:<16} {:>5} {:>9.1} {:>11.1} {:>13.1} {:>14.1} {:>9.1} {:>12}",
                report.scheme,
                report.batch,
                mb(size),
                mb(report.weight_bytes),
                report.decode_tokens_per_s,
                report.prefill_tokens_per_s,
                report.time_to_first_token_s * 1e3,
                peak
            );
        }
        eprintln!("lowbit: {name}: model prepared in {prepared_s:.1} s");
    }
    if !json {
        println!(
            "* size: the input checkpoint on disk for the f32/bf16 rows on the CPU; the weight \
             bytes in memory otherwise (projections quantized, embedding and LM head bf16)."
        );
        println!(
            "  peak RSS: process peak (VmHWM) {}.",
            if peak_is_per_row {
                "during each row's measurement (reset after loading)"
            } else {
                "since the process started (could not be reset per row)"
            }
        );
        if device == Device::Cuda {
            println!(
                "  rates count every sequence of the batch; times are wall-clock, each step \
                 returning its greedy token ids to the host (picked on the GPU)."
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = raw.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    // `study` takes a positional study file, which the common parser rejects.
    let common = if command == "study" {
        Args::parse(&[])
    } else {
        Args::parse(&raw[1..])
    };
    let args = match common {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lowbit: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.flag("--help")
        || command == "--help"
        || command == "help"
        || raw[1..].iter().any(|a| a == "--help")
    {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match command.as_str() {
        "generate" => generate(&args),
        "info" => info(&args),
        "convert" => convert(&args),
        "quantize" => quantize(&args),
        "eval" => eval(&args),
        "bench" => bench(&args),
        "export" => export(&args),
        "study" => study(&raw[1..]),
        "fetch" => default_model::ensure()
            .map(|dir| println!("{}", dir.display()))
            .map_err(|e| e.to_string()),
        other => Err(format!("unknown command '{other}'\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lowbit: error: {e}");
            ExitCode::FAILURE
        }
    }
}
