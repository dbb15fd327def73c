//! Decode speed of the default model (or `$LOWBIT_BENCH_MODEL`) with f32 and bf16 weights:
//! one iteration is one new token after a 32-token context, so criterion's element rate is
//! tokens per second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lowbit::checkpoint::{default_model, Checkpoint, Dtype};
use lowbit::model::{Logits, Model};

const CONTEXT: usize = 32;

fn decode(c: &mut Criterion) {
    let path = match std::env::var_os("LOWBIT_BENCH_MODEL") {
        Some(p) => p.into(),
        None => default_model::ensure().expect("default model"),
    };
    let checkpoint = Checkpoint::open(&path).expect("checkpoint");
    let mut group = c.benchmark_group("decode");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    for (name, dtype) in [("f32", Dtype::F32), ("bf16", Dtype::BF16)] {
        let model = Model::from_checkpoint(&checkpoint, Some(dtype)).expect("model");
        let context: Vec<u32> = (0..CONTEXT as u32).map(|i| 100 + i * 7).collect();
        let mut cache = model.new_cache();
        model.forward(&context, &mut cache).expect("prefill");
        group.bench_function(format!("{name}/batch1"), |b| {
            b.iter(|| {
                cache.truncate(CONTEXT);
                model
                    .forward_batch(&[&[42]], &mut [&mut cache], Logits::Last)
                    .expect("decode")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
