//! Evaluation metrics for `EVALUATE` and the model card.

use serde::{Deserialize, Serialize};

/// Named metric values in a fixed order, plus the confusion matrix for classifiers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(deserialize_with = "crate::serde_nan::pairs")]
    pub values: Vec<(String, f64)>,
    /// `confusion[actual][predicted]` counts.
    pub confusion: Option<Vec<Vec<u64>>>,
}

impl Metrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// MSE, RMSE, MAE, R².
pub fn regression(pred: &[f32], actual: &[f32]) -> Metrics {
    let n = pred.len().max(1) as f64;
    let mean = actual.iter().map(|v| *v as f64).sum::<f64>() / n;
    let (mut se, mut ae, mut tot) = (0.0, 0.0, 0.0);
    for (p, a) in pred.iter().zip(actual) {
        let d = *p as f64 - *a as f64;
        se += d * d;
        ae += d.abs();
        tot += (*a as f64 - mean).powi(2);
    }
    let mse = se / n;
    let r2 = if tot > 0.0 { 1.0 - se / tot } else { 0.0 };
    Metrics {
        values: vec![
            ("mse".into(), mse),
            ("rmse".into(), mse.sqrt()),
            ("mae".into(), ae / n),
            ("r2".into(), r2),
        ],
        confusion: None,
    }
}

/// Accuracy, macro precision/recall/F1, log loss, confusion matrix, and ROC
/// AUC for binary problems. `probabilities` is `rows × 1` (P(class 1)) for
/// binary or `rows × classes`.
pub fn classification(
    predicted: &[u32],
    actual: &[u32],
    probabilities: &[f32],
    classes: usize,
) -> Metrics {
    let n = actual.len().max(1) as f64;
    let mut confusion = vec![vec![0u64; classes]; classes];
    for (p, a) in predicted.iter().zip(actual) {
        confusion[*a as usize][*p as usize] += 1;
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let (mut precision, mut recall, mut f1) = (0.0, 0.0, 0.0);
    for c in 0..classes {
        let tp = confusion[c][c] as f64;
        let predicted_c: f64 = (0..classes).map(|a| confusion[a][c] as f64).sum();
        let actual_c: f64 = confusion[c].iter().map(|v| *v as f64).sum();
        let p = if predicted_c > 0.0 {
            tp / predicted_c
        } else {
            0.0
        };
        let r = if actual_c > 0.0 { tp / actual_c } else { 0.0 };
        precision += p;
        recall += r;
        f1 += if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
    }
    // Binary: precision/recall/F1 of the positive class, as scikit-learn reports.
    let (precision, recall, f1) = if classes == 2 {
        let tp = confusion[1][1] as f64;
        let p = tp / (confusion[0][1] + confusion[1][1]).max(1) as f64;
        let r = tp / (confusion[1][0] + confusion[1][1]).max(1) as f64;
        (
            p,
            r,
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            },
        )
    } else {
        let k = classes as f64;
        (precision / k, recall / k, f1 / k)
    };
    let eps = 1e-15f64;
    let log_loss = -actual
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let p = if classes == 2 && probabilities.len() == actual.len() {
                let p1 = probabilities[i] as f64;
                if *a == 1 {
                    p1
                } else {
                    1.0 - p1
                }
            } else {
                probabilities[i * classes + *a as usize] as f64
            };
            p.clamp(eps, 1.0 - eps).ln()
        })
        .sum::<f64>()
        / n;
    let mut values = vec![
        ("accuracy".into(), correct as f64 / n),
        ("precision".into(), precision),
        ("recall".into(), recall),
        ("f1".into(), f1),
        ("log_loss".into(), log_loss),
    ];
    if classes == 2 && probabilities.len() == actual.len() {
        values.push(("roc_auc".into(), roc_auc(probabilities, actual)));
    }
    Metrics {
        values,
        confusion: Some(confusion),
    }
}

/// Area under the ROC curve by the rank statistic (ties get average ranks).
pub fn roc_auc(scores: &[f32], actual: &[u32]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    let positives = actual.iter().filter(|a| **a == 1).count() as f64;
    let negatives = actual.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    let rank_sum: f64 = actual
        .iter()
        .zip(&ranks)
        .filter(|(a, _)| **a == 1)
        .map(|(_, r)| r)
        .sum();
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

/// Inertia (sum of squared distances to the assigned centroid) and the
/// Davies–Bouldin index (lower is better).
pub fn clustering(features: &[f32], dims: usize, centroids: &[f32], k: usize) -> Metrics {
    let mut inertia = 0.0f64;
    let mut scatter = vec![0.0f64; k];
    let mut counts = vec![0u64; k];
    for row in features.chunks(dims) {
        let (c, dist) = crate::model::nearest_centroid(centroids, k, row);
        inertia += dist as f64;
        scatter[c] += (dist as f64).sqrt();
        counts[c] += 1;
    }
    let s: Vec<f64> = scatter
        .iter()
        .zip(&counts)
        .map(|(s, n)| if *n > 0 { s / *n as f64 } else { 0.0 })
        .collect();
    let used: Vec<usize> = (0..k).filter(|&c| counts[c] > 0).collect();
    let mut db = 0.0;
    for &i in &used {
        let worst = used
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| {
                let d: f64 = (0..dims)
                    .map(|t| (centroids[i * dims + t] - centroids[j * dims + t]) as f64)
                    .map(|v| v * v)
                    .sum::<f64>()
                    .sqrt();
                if d > 0.0 {
                    (s[i] + s[j]) / d
                } else {
                    f64::INFINITY
                }
            })
            .fold(0.0, f64::max);
        db += worst;
    }
    let db = if used.len() > 1 {
        db / used.len() as f64
    } else {
        0.0
    };
    Metrics {
        values: vec![("inertia".into(), inertia), ("davies_bouldin".into(), db)],
        confusion: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_metrics() {
        let m = regression(&[1.0, 2.0, 3.0], &[1.0, 2.0, 5.0]);
        assert!((m.get("mse").unwrap() - 4.0 / 3.0).abs() < 1e-12);
        assert!((m.get("mae").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // mean 8/3, total sum of squares 78/9, residual sum 4
        assert!((m.get("r2").unwrap() - (1.0 - 36.0 / 78.0)).abs() < 1e-12);
    }

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), 0.75);
        assert_eq!(roc_auc(&[0.5, 0.5], &[0, 1]), 0.5);
    }

    #[test]
    fn binary_classification_metrics() {
        let m = classification(&[1, 0, 1, 1], &[1, 0, 0, 1], &[0.9, 0.2, 0.6, 0.7], 2);
        assert_eq!(m.get("accuracy"), Some(0.75));
        assert!((m.get("precision").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.get("recall"), Some(1.0));
        assert_eq!(m.get("roc_auc"), Some(1.0));
        assert_eq!(m.confusion.unwrap(), vec![vec![1, 1], vec![0, 2]]);
    }
}
