//! Training samples/s of `mlp` and `cnn` on the CPU backend and, when a GPU is
//! usable, the CUDA backend: `cargo run --release -p kiln-ml --example train_bench`.
//! In-memory synthetic data (no SQL), one epoch, one partition. Prints CSV.

use std::time::Instant;

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::cuda::CudaBackend;
use kiln_kernels::Backend;
use kiln_ml::{fit, Batch, ModelType, Targets, TrainOptions};

fn data(rows: usize, dims: usize, classes: u32) -> Batch {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let features: Vec<f32> = (0..rows * dims).map(|_| next()).collect();
    let labels = features
        .chunks(dims)
        .map(|r| ((r[0] * classes as f32) as u32).min(classes - 1))
        .collect();
    Batch {
        features,
        dims,
        targets: Targets::Classes(labels),
    }
}

fn main() {
    let mut backends: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::default())];
    match CudaBackend::new(0) {
        Ok(gpu) => backends.push(Box::new(gpu)),
        Err(e) => eprintln!("train_bench: CUDA not used: {e}"),
    }
    let mlp = TrainOptions {
        epochs: 1,
        batch_size: 128,
        hidden_units: vec![256],
        ..TrainOptions::default()
    };
    let mut cnn = TrainOptions::parse(ModelType::Cnn, &[]).expect("defaults");
    cnn.epochs = 1;
    cnn.batch_size = 128;
    cnn.input_shape = Some([1, 28, 28]);
    let workloads = [
        ("mlp 784-256-10", ModelType::Mlp, mlp, data(20_000, 784, 10)),
        (
            "cnn 1x28x28 conv16-conv32-128",
            ModelType::Cnn,
            cnn,
            data(5_000, 784, 10),
        ),
    ];
    println!("model,backend,rows,seconds,samples_per_s");
    for (name, model_type, options, batch) in &workloads {
        for backend in &backends {
            let start = Instant::now();
            let partitions = [vec![batch.clone()]];
            let result = fit(
                *model_type,
                options,
                &partitions,
                Some(10),
                backend.as_ref(),
                None,
                |_| {},
            );
            let seconds = start.elapsed().as_secs_f64();
            match result {
                Ok(_) => println!(
                    "{name},{},{},{seconds:.2},{:.0}",
                    backend.name(),
                    batch.rows(),
                    batch.rows() as f64 / seconds
                ),
                Err(e) => println!("{name},{},{},,error: {e}", backend.name(), batch.rows()),
            }
        }
    }
}
