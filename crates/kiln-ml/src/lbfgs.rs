//! L-BFGS over full-batch objectives evaluated one round at a time: the
//! caller asks for the [`point`](Lbfgs::point) to evaluate, computes the
//! objective and its gradient there (one Ballista round summing over every
//! partition), and [`tell`](Lbfgs::tell)s the result. Memory of the last
//! [`HISTORY`] steps (two-loop recursion), a backtracking line search with
//! the Armijo condition and safeguarded quadratic interpolation. Meant for
//! the convex objectives of linear, logistic and softmax regression; works
//! on any smooth objective. With an L1 term it is OWL-QN (Andrew and Gao,
//! 2007): steps follow the pseudo-gradient and stay in one orthant, so
//! weights reach exactly zero.

use std::collections::VecDeque;

/// Correction pairs kept (Spark and scikit-learn use 10).
pub const HISTORY: usize = 10;
/// Objective evaluations one line search may spend before L-BFGS stops.
const MAX_SEARCH_EVALUATIONS: usize = 20;
/// Armijo's sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;

/// Why the optimizer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The relative decrease of the objective fell below the tolerance, or
    /// the gradient vanished.
    Converged,
    /// `max_iterations` accepted steps.
    MaxIterations,
    /// No step along the search direction decreased the objective any more
    /// (the precision of the evaluations is reached).
    NoProgress,
}

/// What [`Lbfgs::tell`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    /// A line search trial was rejected; evaluate the next point.
    Searching,
    /// A step was accepted: iteration number (1-based) and objective there.
    Iterated { iteration: usize, objective: f64 },
    /// Finished at [`Lbfgs::best`].
    Done(Stop),
}

struct Search {
    direction: Vec<f64>,
    /// OWL-QN: the orthant the step must stay in (sign per coordinate).
    orthant: Vec<f64>,
    /// Directional derivative at the start point.
    slope: f64,
    step: f64,
    evaluations: usize,
}

pub struct Lbfgs {
    tolerance: f64,
    max_iterations: usize,
    /// L1 strength and which coordinates it applies to (OWL-QN when > 0).
    l1: f64,
    penalized: Vec<bool>,
    /// The accepted point, its objective and gradient (`None` before the first evaluation).
    x: Vec<f64>,
    at_x: Option<(f64, Vec<f64>)>,
    history: VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    search: Option<Search>,
    trial: Vec<f64>,
    iteration: usize,
    stopped: Option<Stop>,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Lbfgs {
    pub fn new(start: Vec<f64>, tolerance: f64, max_iterations: usize) -> Self {
        Self::with_l1(start, tolerance, max_iterations, 0.0, vec![])
    }

    /// Minimizes `f(x) + l1 · Σ |x_i|` over the `penalized` coordinates;
    /// [`tell`](Lbfgs::tell) still takes the smooth `f` and its gradient.
    pub fn with_l1(
        start: Vec<f64>,
        tolerance: f64,
        max_iterations: usize,
        l1: f64,
        penalized: Vec<bool>,
    ) -> Self {
        Self {
            tolerance,
            max_iterations,
            l1,
            penalized,
            trial: start.clone(),
            x: start,
            at_x: None,
            history: VecDeque::new(),
            search: None,
            iteration: 0,
            stopped: None,
        }
    }

    /// Where to evaluate the objective next.
    pub fn point(&self) -> &[f64] {
        &self.trial
    }

    /// The best point found so far (the last accepted one).
    pub fn best(&self) -> &[f64] {
        &self.x
    }

    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    fn l1_at(&self, x: &[f64]) -> f64 {
        if self.l1 <= 0.0 {
            return 0.0;
        }
        let sum: f64 = x
            .iter()
            .zip(&self.penalized)
            .filter(|(_, p)| **p)
            .map(|(v, _)| v.abs())
            .sum();
        self.l1 * sum
    }

    /// The steepest-descent direction's negative for `f + l1·|x|₁` at `x`
    /// (the gradient where the L1 term is differentiable, the smallest
    /// subgradient at zero).
    fn pseudo_gradient(&self, x: &[f64], g: &[f64]) -> Vec<f64> {
        if self.l1 <= 0.0 {
            return g.to_vec();
        }
        x.iter()
            .zip(g)
            .zip(&self.penalized)
            .map(|((&x, &g), &penalized)| {
                if !penalized {
                    g
                } else if x > 0.0 {
                    g + self.l1
                } else if x < 0.0 {
                    g - self.l1
                } else if g + self.l1 < 0.0 {
                    g + self.l1
                } else if g - self.l1 > 0.0 {
                    g - self.l1
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// `x + t·d`, with OWL-QN's coordinates that left their orthant set to 0.
    fn trial_point(&self, step: f64, search: &Search) -> Vec<f64> {
        self.x
            .iter()
            .zip(&search.direction)
            .enumerate()
            .map(|(i, (x, d))| {
                let v = x + step * d;
                let leaves = self.l1 > 0.0 && self.penalized[i] && v * search.orthant[i] <= 0.0;
                if leaves {
                    0.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// Takes the objective and gradient at [`point`](Lbfgs::point) (without
    /// the L1 term, which this adds).
    pub fn tell(&mut self, objective: f64, gradient: Vec<f64>) -> Progress {
        if let Some(stop) = self.stopped {
            return Progress::Done(stop);
        }
        let objective = objective + self.l1_at(&self.trial);
        let finite = objective.is_finite() && gradient.iter().all(|g| g.is_finite());
        let Some((f, g)) = self.at_x.take() else {
            // The starting point.
            if !finite {
                return self.stop(Stop::NoProgress);
            }
            self.at_x = Some((objective, gradient));
            return self.start_search(true);
        };
        let mut search = self.search.take().expect("a search runs after the start");
        search.evaluations += 1;
        let predicted: f64 = if self.l1 > 0.0 {
            let pg = self.pseudo_gradient(&self.x, &g);
            self.trial
                .iter()
                .zip(&self.x)
                .zip(&pg)
                .map(|((t, x), p)| (t - x) * p)
                .sum()
        } else {
            search.step * search.slope
        };
        let decrease_needed = f + ARMIJO * predicted;
        if !(finite && objective <= decrease_needed) {
            self.at_x = Some((f, g));
            if search.evaluations >= MAX_SEARCH_EVALUATIONS {
                return self.stop(Stop::NoProgress);
            }
            let t = search.step;
            let next = if objective.is_finite() {
                // Minimum of the quadratic through f, the slope and the trial value.
                let curvature = objective - f - search.slope * t;
                let q = -search.slope * t * t / (2.0 * curvature.max(f64::MIN_POSITIVE));
                q.clamp(0.1 * t, 0.5 * t)
            } else {
                0.1 * t
            };
            search.step = next;
            self.trial = self.trial_point(next, &search);
            self.search = Some(search);
            return Progress::Searching;
        }
        // Accepted.
        let s: Vec<f64> = self.trial.iter().zip(&self.x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gradient.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-10 * dot(&y, &y) && sy > 0.0 {
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back((s, y, 1.0 / sy));
        }
        self.x = std::mem::take(&mut self.trial);
        self.iteration += 1;
        let relative_decrease = (f - objective) / f.abs().max(objective.abs()).max(1.0);
        let gradient_max = self
            .pseudo_gradient(&self.x, &gradient)
            .iter()
            .fold(0.0f64, |m, v| m.max(v.abs()));
        self.at_x = Some((objective, gradient));
        let progress = Progress::Iterated {
            iteration: self.iteration,
            objective,
        };
        if relative_decrease <= self.tolerance || gradient_max <= 1e-10 {
            self.stop(Stop::Converged);
        } else if self.iteration >= self.max_iterations {
            self.stop(Stop::MaxIterations);
        } else {
            self.start_search(false);
        }
        progress
    }

    fn stop(&mut self, stop: Stop) -> Progress {
        self.stopped = Some(stop);
        self.search = None;
        self.trial = self.x.clone();
        Progress::Done(stop)
    }

    /// A new direction from the accepted point by the two-loop recursion.
    fn start_search(&mut self, first: bool) -> Progress {
        let (_, smooth) = self.at_x.as_ref().expect("evaluated");
        let g = &self.pseudo_gradient(&self.x, smooth);
        if g.iter().all(|v| *v == 0.0) {
            return self.stop(Stop::Converged);
        }
        let mut q: Vec<f64> = g.iter().map(|v| -v).collect();
        let mut alphas = Vec::with_capacity(self.history.len());
        for (s, y, rho) in self.history.iter().rev() {
            let alpha = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= alpha * yi);
            alphas.push(alpha);
        }
        if let Some((s, y, _)) = self.history.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for ((s, y, rho), alpha) in self.history.iter().zip(alphas.into_iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(qi, si)| *qi += (alpha - beta) * si);
        }
        if self.l1 > 0.0 {
            // OWL-QN: keep only the components that descend along the pseudo-gradient.
            q.iter_mut().zip(g).for_each(|(d, p)| {
                if *d * -p <= 0.0 {
                    *d = 0.0;
                }
            });
        }
        let mut slope = dot(g, &q);
        if slope >= 0.0 {
            // Not a descent direction (rounding): start over from steepest descent.
            self.history.clear();
            q = g.iter().map(|v| -v).collect();
            slope = -dot(g, g);
        }
        let step = if first || self.history.is_empty() {
            1.0 / dot(g, g).sqrt().max(1.0)
        } else {
            1.0
        };
        let orthant = self
            .x
            .iter()
            .zip(g)
            .map(|(x, p)| if *x != 0.0 { x.signum() } else { -p.signum() })
            .collect();
        let search = Search {
            direction: q,
            orthant,
            slope,
            step,
            evaluations: 0,
        };
        self.trial = self.trial_point(step, &search);
        self.search = Some(search);
        Progress::Searching
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimize(
        f: impl Fn(&[f64]) -> (f64, Vec<f64>),
        start: Vec<f64>,
        max_iterations: usize,
    ) -> (Vec<f64>, Stop, usize) {
        let mut lbfgs = Lbfgs::new(start, 1e-12, max_iterations);
        let mut evaluations = 0;
        loop {
            let (value, gradient) = f(lbfgs.point());
            evaluations += 1;
            if let Progress::Done(stop) = lbfgs.tell(value, gradient) {
                return (lbfgs.best().to_vec(), stop, evaluations);
            }
            assert!(evaluations < 10_000);
        }
    }

    #[test]
    fn minimizes_rosenbrock() {
        let rosenbrock = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let value = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let gradient = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            (value, gradient)
        };
        let (x, _, _) = minimize(rosenbrock, vec![-1.2, 1.0], 500);
        assert!(
            (x[0] - 1.0).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }

    #[test]
    fn a_badly_scaled_quadratic_converges_in_few_iterations() {
        let scales = [1.0, 1e3, 1e-3, 50.0];
        let quadratic = |x: &[f64]| {
            let value = x
                .iter()
                .zip(&scales)
                .map(|(v, s)| 0.5 * s * (v - 2.0).powi(2))
                .sum();
            (
                value,
                x.iter().zip(&scales).map(|(v, s)| s * (v - 2.0)).collect(),
            )
        };
        let (x, stop, evaluations) = minimize(quadratic, vec![0.0; 4], 100);
        assert_eq!(stop, Stop::Converged);
        assert!(x.iter().all(|v| (v - 2.0).abs() < 1e-3), "{x:?}");
        assert!(evaluations < 100, "{evaluations}");
    }

    #[test]
    fn owlqn_soft_thresholds_to_exact_zeros() {
        // ½‖x − c‖² + λ‖x‖₁ is minimized by the soft threshold of c.
        let c = [3.0, -0.5, 0.2, -2.0, 1.0];
        let l1 = 0.6;
        let mut lbfgs = Lbfgs::with_l1(
            vec![0.0; 5],
            1e-12,
            200,
            l1,
            vec![true, true, true, true, false],
        );
        let mut evaluations = 0;
        loop {
            let x = lbfgs.point().to_vec();
            let value = x.iter().zip(&c).map(|(v, c)| 0.5 * (v - c).powi(2)).sum();
            let gradient = x.iter().zip(&c).map(|(v, c)| v - c).collect();
            evaluations += 1;
            if let Progress::Done(_) = lbfgs.tell(value, gradient) {
                break;
            }
            assert!(evaluations < 1000);
        }
        let x = lbfgs.best();
        let expected = [2.4, 0.0, 0.0, -1.4, 1.0];
        for (got, want) in x.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{x:?}");
        }
        assert_eq!((x[1], x[2]), (0.0, 0.0), "exact zeros");
    }

    #[test]
    fn stops_at_max_iterations_and_on_non_finite_starts() {
        let (_, stop, _) = minimize(|x| (x[0].powi(4), vec![4.0 * x[0].powi(3)]), vec![3.0], 2);
        assert_eq!(stop, Stop::MaxIterations);
        let (_, stop, evaluations) = minimize(|_| (f64::NAN, vec![0.0]), vec![1.0], 5);
        assert_eq!((stop, evaluations), (Stop::NoProgress, 1));
    }
}
