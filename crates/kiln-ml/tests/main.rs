//! kiln-ml behaviour on synthetic data: gradients, solvers, accuracy targets,
//! partition-count invariance, determinism, files.

use kiln_kernels::cpu::CpuBackend;
use kiln_kernels::{Activation, Backend};
use kiln_ml::network::Network;
use kiln_ml::options::{OptimizerKind, Solver};
use kiln_ml::{evaluate, file, fit, Batch, Model, ModelType, Targets, TrainOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cpu() -> CpuBackend {
    CpuBackend::default()
}

/// `rows` rows of `dims` features uniform in [-1, 1).
fn features(rows: usize, dims: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * dims).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Splits one batch into `n` partitions of consecutive rows, each in batches of 100.
fn partitions(batch: &Batch, n: usize) -> Vec<Vec<Batch>> {
    let rows = batch.rows();
    let per = rows.div_ceil(n);
    (0..n)
        .map(|p| {
            let range: Vec<usize> = (p * per..((p + 1) * per).min(rows)).collect();
            range.chunks(100).map(|c| batch.gather(c)).collect()
        })
        .collect()
}

fn linear_data(rows: usize) -> (Batch, [f32; 3], f32) {
    let coefficients = [1.5, -2.0, 0.5];
    let intercept = 0.75;
    let x = features(rows, 3, 1);
    let y = x
        .chunks(3)
        .map(|r| r.iter().zip(&coefficients).map(|(a, b)| a * b).sum::<f32>() + intercept)
        .collect();
    (
        Batch {
            features: x,
            dims: 3,
            targets: Targets::Values(y),
        },
        coefficients,
        intercept,
    )
}

/// Two Gaussian-ish blobs per class centre, `classes` centres on a circle.
fn blobs(rows: usize, classes: usize, spread: f32, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut x = Vec::new();
    let mut y = Vec::new();
    for i in 0..rows {
        let c = i % classes;
        let angle = c as f32 * std::f32::consts::TAU / classes as f32;
        let noise = |rng: &mut ChaCha8Rng| {
            (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum::<f32>() / 2.0 * spread
        };
        x.push(3.0 * angle.cos() + noise(&mut rng));
        x.push(3.0 * angle.sin() + noise(&mut rng));
        y.push(c as u32);
    }
    Batch {
        features: x,
        dims: 2,
        targets: Targets::Classes(y),
    }
}

fn options(pairs: impl FnOnce(&mut TrainOptions)) -> TrainOptions {
    let mut o = TrainOptions::default();
    pairs(&mut o);
    o
}

#[test]
fn network_gradients_match_finite_differences() {
    let backend = cpu();
    for activation in [Activation::Tanh, Activation::Sigmoid, Activation::Relu] {
        let mut model = Model::new(
            ModelType::Mlp,
            3,
            Some(3),
            &options(|o| {
                o.hidden_units = vec![5, 4];
                o.activation = activation;
            }),
        )
        .unwrap();
        let batch = Batch {
            features: features(6, 3, 2),
            dims: 3,
            targets: Targets::Classes(vec![0, 1, 2, 2, 1, 0]),
        };
        let network: Network = model.network.clone().unwrap();
        let loss_at = |params: &[f32], model: &mut Model| -> f32 {
            model.set_params(params.to_vec());
            let net = model.network.as_ref().unwrap();
            let pass = net.forward(&backend, &batch.features, 6, None).unwrap();
            let mut g = vec![0.0; pass.logits().len()];
            model
                .loss(&backend, pass.logits(), &batch.targets, &mut g)
                .unwrap()
        };
        let pass = network.forward(&backend, &batch.features, 6, None).unwrap();
        let mut g = vec![0.0; pass.logits().len()];
        model
            .loss(&backend, pass.logits(), &batch.targets, &mut g)
            .unwrap();
        let grads = network
            .backward(&backend, &batch.features, 6, &pass, g)
            .unwrap();
        let h = 1e-2;
        for i in (0..network.params.len()).step_by(3) {
            let mut plus = network.params.clone();
            plus[i] += h;
            let mut minus = network.params.clone();
            minus[i] -= h;
            let numeric = (loss_at(&plus, &mut model) - loss_at(&minus, &mut model)) / (2.0 * h);
            assert!(
                (numeric - grads[i]).abs() < 2e-3,
                "{activation:?} param {i}: analytic {} numeric {numeric}",
                grads[i]
            );
        }
    }
}

#[test]
fn linear_regression_recovers_coefficients_with_every_solver() {
    let (data, coefficients, intercept) = linear_data(2000);
    let solvers = [
        ("normal", options(|o| o.solver = Solver::Normal), 4),
        (
            "sgd",
            options(|o| {
                o.optimizer = OptimizerKind::Sgd;
                o.epochs = 60;
                o.batch_size = 32;
                o.learning_rate = 0.1;
            }),
            2,
        ),
        ("lbfgs", options(|o| o.optimizer = OptimizerKind::Lbfgs), 3),
    ];
    for (name, solver, parts) in solvers {
        let (model, history) = fit(
            ModelType::LinearRegression,
            &solver,
            &partitions(&data, parts),
            None,
            &cpu(),
            None,
            |_| {},
        )
        .unwrap();
        let p = in_original_units(&model);
        let expected = coefficients.iter().chain([&intercept]);
        for (i, (got, want)) in p.iter().zip(expected).enumerate() {
            assert!(
                (got - *want as f64).abs() < 1e-3,
                "{name}: parameter {i} = {got} (last epoch {:?})",
                history.epochs.last()
            );
        }
    }
}

/// A linear model's weights then intercept, in the features' own units.
fn in_original_units(model: &Model) -> Vec<f64> {
    let (mut weights, intercepts) = model.linear_coefficients().expect("a linear model");
    weights.extend(intercepts);
    weights
}

#[test]
fn classifiers_reach_their_accuracy_targets() {
    // Linearly separable: label = x0 + x1 > 0, with a margin.
    let x: Vec<f32> = features(3000, 2, 5)
        .chunks(2)
        .filter(|r| (r[0] + r[1]).abs() > 0.1)
        .flatten()
        .copied()
        .collect();
    let y = x.chunks(2).map(|r| u32::from(r[0] + r[1] > 0.0)).collect();
    let separable = Batch {
        features: x,
        dims: 2,
        targets: Targets::Classes(y),
    };
    let o = options(|o| {
        o.epochs = 20;
        o.learning_rate = 0.05;
    });
    let (model, _) = fit(
        ModelType::LogisticRegression,
        &o,
        &partitions(&separable, 2),
        Some(2),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    let accuracy = evaluate(&model, &cpu(), &separable)
        .unwrap()
        .get("accuracy")
        .unwrap();
    assert!(accuracy >= 0.98, "logistic accuracy {accuracy}");

    let mixture = blobs(3000, 4, 0.6, 6);
    let (model, _) = fit(
        ModelType::SoftmaxRegression,
        &o,
        &partitions(&mixture, 2),
        Some(4),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    let metrics = evaluate(&model, &cpu(), &mixture).unwrap();
    assert!(
        metrics.get("accuracy").unwrap() >= 0.95,
        "softmax {metrics:?}"
    );
}

#[test]
fn mlp_learns_xor() {
    let x = [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0].repeat(64);
    let y = [0u32, 1, 1, 0].repeat(64);
    let xor = Batch {
        features: x,
        dims: 2,
        targets: Targets::Classes(y),
    };
    let o = options(|o| {
        o.hidden_units = vec![8];
        o.activation = Activation::Tanh;
        o.epochs = 150;
        o.batch_size = 16;
        o.learning_rate = 0.05;
    });
    let (model, _) = fit(
        ModelType::Mlp,
        &o,
        &[vec![xor.clone()]],
        Some(2),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        evaluate(&model, &cpu(), &xor).unwrap().get("accuracy"),
        Some(1.0)
    );
}

#[test]
fn four_partitions_match_one_and_training_is_deterministic() {
    let data = blobs(4000, 3, 0.9, 8);
    let o = options(|o| {
        o.epochs = 10;
        o.learning_rate = 0.03;
        o.hidden_units = vec![16];
    });
    let accuracy = |parts: usize| {
        let (model, _) = fit(
            ModelType::Mlp,
            &o,
            &partitions(&data, parts),
            Some(3),
            &cpu(),
            None,
            |_| {},
        )
        .unwrap();
        (
            evaluate(&model, &cpu(), &data)
                .unwrap()
                .get("accuracy")
                .unwrap(),
            model,
        )
    };
    let (one, _) = accuracy(1);
    let (four, model_a) = accuracy(4);
    assert!(
        (one - four).abs() <= 0.01,
        "1 partition {one} vs 4 partitions {four}"
    );
    let (_, model_b) = accuracy(4);
    assert_eq!(
        model_a.params(),
        model_b.params(),
        "same seed and partitioning, same model"
    );
}

#[test]
fn validation_and_early_stopping_are_reported() {
    let data = blobs(2000, 3, 0.9, 9);
    let o = options(|o| {
        o.epochs = 30;
        o.validation_fraction = 0.2;
        o.early_stopping_patience = Some(2);
        o.optimizer = OptimizerKind::Momentum;
        o.learning_rate = 0.05;
    });
    let mut lines = 0;
    let (_, history) = fit(
        ModelType::SoftmaxRegression,
        &o,
        &partitions(&data, 2),
        Some(3),
        &cpu(),
        None,
        |_| lines += 1,
    )
    .unwrap();
    assert_eq!(lines, history.epochs.len());
    let first = history.epochs[0]
        .validation
        .as_ref()
        .expect("validation metrics");
    assert!(first.get("accuracy").is_some() && first.get("log_loss").is_some());
    assert!(history.rows_seen > 0 && history.rows_seen < 2000 * history.epochs.len() as u64);
}

#[test]
fn kmeans_finds_the_blob_centres() {
    let data = blobs(1500, 3, 0.3, 10);
    let o = options(|o| o.k = 3);
    let (model, _) = fit(
        ModelType::Kmeans,
        &o,
        &partitions(&data, 3),
        None,
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    let mut found = 0;
    for c in 0..3 {
        let angle = c as f32 * std::f32::consts::TAU / 3.0;
        let centre = [3.0 * angle.cos(), 3.0 * angle.sin()];
        if model
            .centroids
            .chunks(2)
            .any(|m| (m[0] - centre[0]).abs() < 0.2 && (m[1] - centre[1]).abs() < 0.2)
        {
            found += 1;
        }
    }
    assert_eq!(found, 3, "centroids {:?}", model.centroids);
    let metrics = evaluate(&model, &cpu(), &data).unwrap();
    assert!(metrics.get("davies_bouldin").unwrap() < 0.5, "{metrics:?}");
}

#[test]
fn saved_models_predict_identically() {
    let data = blobs(600, 3, 0.8, 11);
    let o = options(|o| o.epochs = 3);
    for (model_type, classes) in [(ModelType::Mlp, Some(3)), (ModelType::Kmeans, None)] {
        let (model, _) = fit(
            model_type,
            &o,
            &[vec![data.clone()]],
            classes,
            &cpu(),
            None,
            |_| {},
        )
        .unwrap();
        let bytes = file::to_bytes(&model).unwrap();
        let loaded = file::from_bytes(&bytes, "model.safetensors").unwrap();
        assert_eq!(loaded, model);
        assert_eq!(
            loaded.predict(&cpu(), &data).unwrap(),
            model.predict(&cpu(), &data).unwrap()
        );
    }
    let err = file::from_bytes(b"not a model", "x.safetensors")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("model file 'x.safetensors'"), "{err}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let o = TrainOptions::default();
    let one_class = Batch {
        features: vec![1.0, 2.0],
        dims: 1,
        targets: Targets::Classes(vec![0, 0]),
    };
    let err = fit(
        ModelType::LogisticRegression,
        &o,
        &[vec![one_class]],
        Some(1),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("classification needs at least two"),
        "{err}"
    );

    let three = blobs(30, 3, 0.5, 1);
    let err = fit(
        ModelType::LogisticRegression,
        &o,
        &[vec![three]],
        Some(3),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("use softmax_regression"), "{err}");

    let err = fit(
        ModelType::LinearRegression,
        &o,
        &[vec![]],
        None,
        &cpu(),
        None,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no rows"), "{err}");

    let model = Model::new(ModelType::LinearRegression, 2, None, &o).unwrap();
    let wrong = Batch {
        features: vec![1.0, 2.0, 3.0],
        dims: 3,
        targets: Targets::None,
    };
    let err = model.predict(&cpu() as &dyn Backend, &wrong).unwrap_err();
    assert!(
        err.to_string()
            .contains("expects 2 feature values per row, got 3"),
        "{err}"
    );
}

fn cnn_options(pairs: impl FnOnce(&mut TrainOptions)) -> TrainOptions {
    let mut o = TrainOptions::parse(ModelType::Cnn, &[]).unwrap();
    pairs(&mut o);
    o
}

#[test]
fn cnn_gradients_match_finite_differences() {
    let backend = cpu();
    for (stages, pool) in [(vec![(3, 3), (2, 3)], 2), (vec![(2, 3)], 1)] {
        let mut model = Model::new(
            ModelType::Cnn,
            2 * 6 * 6,
            Some(3),
            &cnn_options(|o| {
                o.input_shape = Some([2, 6, 6]);
                o.conv_layers = stages.clone();
                o.pool = pool;
                o.hidden_units = vec![4];
                o.activation = Activation::Tanh;
            }),
        )
        .unwrap();
        let batch = Batch {
            features: features(4, 72, 9),
            dims: 72,
            targets: Targets::Classes(vec![0, 1, 2, 1]),
        };
        let network: Network = model.network.clone().unwrap();
        let reloaded = file::from_bytes(&file::to_bytes(&model).unwrap(), "mem").unwrap();
        assert_eq!(reloaded, model, "a cnn survives its safetensors file");
        let loss_at = |params: &[f32], model: &mut Model| -> f64 {
            model.set_params(params.to_vec());
            let net = model.network.as_ref().unwrap();
            let pass = net.forward(&backend, &batch.features, 4, None).unwrap();
            let mut g = vec![0.0; pass.logits().len()];
            model
                .loss(&backend, pass.logits(), &batch.targets, &mut g)
                .unwrap() as f64
        };
        let pass = network.forward(&backend, &batch.features, 4, None).unwrap();
        let mut g = vec![0.0; pass.logits().len()];
        model
            .loss(&backend, pass.logits(), &batch.targets, &mut g)
            .unwrap();
        let grads = network
            .backward(&backend, &batch.features, 4, &pass, g)
            .unwrap();
        let mut numeric_at = |i: usize, h: f32| {
            let mut plus = network.params.clone();
            plus[i] += h;
            let mut minus = network.params.clone();
            minus[i] -= h;
            (loss_at(&plus, &mut model) - loss_at(&minus, &mut model)) / (2.0 * h as f64)
        };
        let mut checked = 0;
        for i in (0..network.params.len()).step_by(3) {
            let (coarse, fine) = (numeric_at(i, 1e-2), numeric_at(i, 2e-3));
            // Max pooling and ReLU have kinks: where the two step sizes
            // disagree, a step crossed one and the difference means nothing.
            if (coarse - fine).abs() > 1e-3 {
                continue;
            }
            checked += 1;
            assert!(
                (fine - grads[i] as f64).abs() < 3e-3,
                "stages {stages:?} pool {pool} param {i}: analytic {} numeric {fine}",
                grads[i]
            );
        }
        assert!(
            checked * 10 >= network.params.len() / 3 * 9,
            "too few smooth points: {checked}"
        );
    }
}

/// The 8×8 handwritten digits (UCI "Optical Recognition of Handwritten
/// Digits", as shipped by scikit-learn; CC BY 4.0): 1,797 images, pixels 0–16.
fn digits() -> Batch {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/examples/data/digits.csv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1) {
        let values: Vec<f32> = line.split(',').map(|v| v.parse().unwrap()).collect();
        features.extend(values[..64].iter().map(|p| p / 16.0));
        labels.push(values[64] as u32);
    }
    Batch {
        features,
        dims: 64,
        targets: Targets::Classes(labels),
    }
}

#[test]
fn cnn_learns_handwritten_digits() {
    let all = digits();
    let rows: Vec<usize> = (0..all.rows()).collect();
    let (test_rows, train_rows): (Vec<usize>, Vec<usize>) = rows.iter().partition(|r| *r % 5 == 0);
    let (train, test) = (all.gather(&train_rows), all.gather(&test_rows));
    let o = cnn_options(|o| {
        o.input_shape = Some([1, 8, 8]);
        o.conv_layers = vec![(8, 3), (16, 3)];
        o.hidden_units = vec![64];
        o.epochs = 12;
        o.batch_size = 32;
        o.learning_rate = 0.01;
    });
    let (model, _) = fit(
        ModelType::Cnn,
        &o,
        &partitions(&train, 2),
        Some(10),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    let accuracy = evaluate(&model, &cpu(), &test)
        .unwrap()
        .get("accuracy")
        .unwrap();
    eprintln!("cnn digits: held-out accuracy {accuracy:.4}");
    assert!(accuracy >= 0.93, "cnn digits accuracy {accuracy}");
}

#[test]
fn cnn_options_are_checked_against_the_features() {
    let err = Model::new(ModelType::Cnn, 64, Some(10), &cnn_options(|_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("input_shape = [1, 8, 8]"), "{err}");
    let err = Model::new(
        ModelType::Cnn,
        64,
        Some(10),
        &cnn_options(|o| o.input_shape = Some([1, 7, 7])),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("holds 49 values") && err.contains("64"),
        "{err}"
    );
    let err = Model::new(
        ModelType::Cnn,
        16,
        Some(10),
        &cnn_options(|o| {
            o.input_shape = Some([1, 4, 4]);
            o.conv_layers = vec![(4, 3), (4, 3), (4, 3)];
        }),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("shrink to nothing"), "{err}");
    use kiln_ml::options::OptionValue;
    let err = TrainOptions::parse(
        ModelType::Cnn,
        &[("conv_layers".into(), OptionValue::List(vec![16.0, 3.0]))],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("[filters, kernel] pairs"), "{err}");
    let parsed = TrainOptions::parse(
        ModelType::Cnn,
        &[
            ("input_shape".into(), OptionValue::List(vec![28.0, 28.0])),
            (
                "conv_layers".into(),
                OptionValue::Lists(vec![vec![16.0, 3.0], vec![32.0, 5.0]]),
            ),
            ("augment".into(), OptionValue::Text("flip, shift".into())),
        ],
    )
    .unwrap();
    assert_eq!(parsed.input_shape, Some([1, 28, 28]));
    assert_eq!(parsed.conv_layers, vec![(16, 3), (32, 5)]);
    assert!(parsed.augment.flip && parsed.augment.shift);
    assert!(
        TrainOptions::parse(ModelType::Mlp, &[("pool".into(), OptionValue::Number(2.0))]).is_err()
    );
}

#[test]
fn augmentation_flips_and_shifts_images() {
    use kiln_ml::options::Augment;
    use kiln_ml::train::augment;
    // 3×4 single-channel images, each with one lit pixel at (1, 0).
    let image: Vec<f32> = (0..12).map(|i| if i == 4 { 1.0 } else { 0.0 }).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let flip = Augment {
        flip: true,
        shift: false,
    };
    let mut images: Vec<f32> = image.repeat(50);
    augment(&mut images, [1, 3, 4], flip, &mut rng);
    let mirrored = images.chunks(12).filter(|img| img[7] == 1.0).count();
    assert!(images
        .chunks(12)
        .all(|img| img == image.as_slice() || img[7] == 1.0));
    assert!((10..40).contains(&mirrored), "{mirrored} of 50 flipped");
    let shift = Augment {
        flip: false,
        shift: true,
    };
    let mut images: Vec<f32> = image.repeat(50);
    augment(&mut images, [1, 3, 4], shift, &mut rng);
    for img in images.chunks(12) {
        let lit: Vec<usize> = (0..12).filter(|i| img[*i] == 1.0).collect();
        assert!(lit.len() <= 1);
        if let [at] = lit.as_slice() {
            let (y, x) = (at / 4, at % 4);
            assert!(y.abs_diff(1) <= 1 && x <= 1, "moved to ({y}, {x})");
        }
    }
}

/// `device = 'cuda'` and `'cpu'` train the same models (mlp and cnn) within
/// 1e-3 absolute on every parameter: same data, seed and order; only the
/// floating-point summation order of the kernels differs.
#[test]
#[ignore = "needs a GPU: KILN_TEST_CUDA=1 cargo test -p kiln-ml --test main -- --ignored"]
fn gpu_training_matches_cpu_training() {
    if std::env::var("KILN_TEST_CUDA").as_deref() != Ok("1") {
        eprintln!("skipped: set KILN_TEST_CUDA=1 on a CUDA host");
        return;
    }
    let gpu = kiln_kernels::cuda::CudaBackend::new(0).expect("a usable CUDA device");
    let digits = digits();
    let images = digits.gather(&(0..400).collect::<Vec<_>>());
    let cases = [
        (
            ModelType::Mlp,
            options(|o| {
                o.hidden_units = vec![32];
                o.epochs = 3;
                o.batch_size = 32;
            }),
        ),
        (
            ModelType::Cnn,
            cnn_options(|o| {
                o.input_shape = Some([1, 8, 8]);
                o.conv_layers = vec![(4, 3)];
                o.hidden_units = vec![16];
                o.epochs = 2;
                o.batch_size = 32;
            }),
        ),
    ];
    for (model_type, o) in cases {
        let parts = partitions(&images, 2);
        let (on_cpu, _) = fit(model_type, &o, &parts, Some(10), &cpu(), None, |_| {}).unwrap();
        let (on_gpu, _) = fit(model_type, &o, &parts, Some(10), &gpu, None, |_| {}).unwrap();
        let worst = on_cpu
            .params()
            .iter()
            .zip(on_gpu.params())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-3,
            "{model_type}: parameters differ by up to {worst}"
        );
    }
}

/// Features a million times apart in scale, as raw columns of a table are:
/// the defaults (standardization inside the model, L-BFGS) need no tuning.
#[test]
fn default_options_fit_features_of_very_different_scales() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let rows = 2000;
    let mut x = Vec::with_capacity(rows * 3);
    let mut binary = Vec::with_capacity(rows);
    let mut three = Vec::with_capacity(rows);
    for _ in 0..rows {
        let (a, b, c): (f32, f32, f32) = (
            rng.gen_range(-1.0..1.0),
            rng.gen_range(-1.0..1.0),
            rng.gen_range(-1.0..1.0),
        );
        x.extend([5e4 + 1e4 * a, 1e-3 * b, 100.0 * c]);
        binary.push(u32::from(a + 2.0 * b > 0.1));
        three.push(if a > 0.3 {
            2
        } else if b > 0.0 {
            1
        } else {
            0
        });
    }
    let batch = |targets: Vec<u32>| Batch {
        features: x.clone(),
        dims: 3,
        targets: Targets::Classes(targets),
    };
    for (model_type, data, classes) in [
        (ModelType::LogisticRegression, batch(binary.clone()), 2),
        (ModelType::SoftmaxRegression, batch(three.clone()), 3),
    ] {
        let defaults = TrainOptions::parse(model_type, &[]).unwrap();
        assert_eq!(defaults.optimizer, OptimizerKind::Lbfgs);
        assert!(defaults.standardize);
        let mut accuracies = vec![];
        for n in [1, 2, 4] {
            let (model, history) = fit(
                model_type,
                &defaults,
                &partitions(&data, n),
                Some(classes),
                &cpu(),
                None,
                |_| {},
            )
            .unwrap();
            assert!(history.epochs.len() <= defaults.max_iterations);
            let accuracy = evaluate(&model, &cpu(), &data)
                .unwrap()
                .get("accuracy")
                .unwrap();
            accuracies.push(accuracy);
        }
        assert!(accuracies[0] >= 0.97, "{model_type}: {accuracies:?}");
        // Full-batch sums: the partitioning changes nothing but rounding.
        assert!(
            accuracies
                .iter()
                .all(|a| (a - accuracies[0]).abs() <= 0.005),
            "{model_type}: {accuracies:?}"
        );
    }

    // Without standardization, the same defaults cannot move the small feature.
    let raw = TrainOptions::parse(
        ModelType::LogisticRegression,
        &[("standardize".to_string(), kiln_ml::OptionValue::Bool(false))],
    )
    .unwrap();
    let (model, _) = fit(
        ModelType::LogisticRegression,
        &raw,
        &partitions(&batch(binary.clone()), 1),
        Some(2),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    assert!(model.standardization.is_none());
    let raw_accuracy = evaluate(&model, &cpu(), &batch(binary))
        .unwrap()
        .get("accuracy")
        .unwrap();
    assert!(raw_accuracy < 0.9, "raw accuracy {raw_accuracy}");
}

/// warm_start keeps the first version's standardization, and a saved model
/// predicts with it.
#[test]
fn standardization_travels_with_the_model() {
    let (data, _, _) = linear_data(500);
    let mut scaled = data.clone();
    scaled
        .features
        .iter_mut()
        .for_each(|v| *v = *v * 1000.0 + 7.0);
    let o = TrainOptions::parse(
        ModelType::LinearRegression,
        &[(
            "optimizer".to_string(),
            kiln_ml::OptionValue::Text("lbfgs".into()),
        )],
    )
    .unwrap();
    let fit_on = |warm| {
        fit(
            ModelType::LinearRegression,
            &o,
            &partitions(&scaled, 2),
            None,
            &cpu(),
            warm,
            |_| {},
        )
        .unwrap()
        .0
    };
    let first = fit_on(None);
    let standardization = first
        .standardization
        .clone()
        .expect("standardized by default");
    assert!((standardization.mean[0] - 7.0).abs() < 50.0);
    let second = fit_on(Some(first.clone()));
    assert_eq!(second.standardization, Some(standardization));
    let restored = file::from_bytes(&file::to_bytes(&second).unwrap(), "m").unwrap();
    assert_eq!(
        restored.predict(&cpu(), &scaled).unwrap(),
        second.predict(&cpu(), &scaled).unwrap()
    );
    let r2 = evaluate(&restored, &cpu(), &scaled)
        .unwrap()
        .get("r2")
        .unwrap();
    assert!(r2 > 0.999_999, "r2 {r2}");
}

/// `l1` (OWL-QN) zeroes the weights of features that carry no signal and
/// keeps the informative ones.
#[test]
fn l1_selects_the_informative_features() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (rows, dims) = (3000, 6);
    let x: Vec<f32> = (0..rows * dims).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y = x
        .chunks(dims)
        .map(|r| u32::from(2.0 * r[0] - 1.5 * r[1] + 0.3 * rng.gen_range(-1.0f32..1.0) > 0.0))
        .collect();
    let data = Batch {
        features: x,
        dims,
        targets: Targets::Classes(y),
    };
    let o = TrainOptions::parse(
        ModelType::LogisticRegression,
        &[("l1".to_string(), kiln_ml::OptionValue::Number(0.02))],
    )
    .unwrap();
    let (model, _) = fit(
        ModelType::LogisticRegression,
        &o,
        &partitions(&data, 2),
        Some(2),
        &cpu(),
        None,
        |_| {},
    )
    .unwrap();
    let (weights, _) = model.linear_coefficients().unwrap();
    assert!(weights[0] > 1.0 && weights[1] < -1.0, "{weights:?}");
    assert!(weights[2..].iter().all(|w| *w == 0.0), "{weights:?}");
    let accuracy = evaluate(&model, &cpu(), &data)
        .unwrap()
        .get("accuracy")
        .unwrap();
    assert!(accuracy > 0.9, "{accuracy}");
}
