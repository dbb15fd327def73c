//! Scoring throughput of the default model (or `$LOWBIT_BENCH_MODEL`): tokens run through the
//! model per second for multiple-choice log-likelihood (ARC layout, 4 choices sharing one
//! context), last-word log-likelihood (LAMBADA layout), and greedy GSM8K generation, on the
//! fixtures in tests/fixtures/eval, for f32 and w4a16-g128 weights. One criterion iteration is
//! one task over a slice of the fixture; the printed rate is tokens per second.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lowbit::checkpoint::{default_model, Checkpoint, Dtype};
use lowbit::eval::{run_task, Scorer, TaskOptions};
use lowbit::model::Model;
use lowbit::quant::{quantize_model, QuantRules, QuantScheme, RtnOptions};

fn scoring(c: &mut Criterion) {
    let path = match std::env::var_os("LOWBIT_BENCH_MODEL") {
        Some(p) => p.into(),
        None => default_model::ensure().expect("default model"),
    };
    let checkpoint = Checkpoint::open(&path).expect("checkpoint");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval");
    let mut group = c.benchmark_group("eval");
    group.sample_size(10);
    for scheme in ["f32", "w4a16-g128"] {
        let mut model = Model::from_checkpoint(&checkpoint, Some(Dtype::F32)).expect("model");
        if scheme != "f32" {
            let rules = QuantRules::new(QuantScheme::parse(scheme).expect("scheme"));
            quantize_model(&mut model, &rules, &RtnOptions::default()).expect("quantize");
        }
        let mut scorer = Scorer::new(&model);
        scorer.max_length = 512;
        let options = TaskOptions {
            data_dir: fixtures.clone(),
            max_length: Some(512),
            max_gen_tokens: 32,
            keep_samples: false,
            ..Default::default()
        };
        for (task, limit) in [("arc_easy", 10), ("lambada_openai", 20), ("gsm8k_cot", 2)] {
            let options = TaskOptions {
                limit: Some(limit),
                ..options.clone()
            };
            let tokens = run_task(&scorer, task, &options).expect("task").tokens;
            group.throughput(Throughput::Elements(tokens as u64));
            group.bench_function(format!("{scheme}/{task}"), |b| {
                b.iter(|| run_task(&scorer, task, &options).expect("task"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, scoring);
criterion_main!(benches);
