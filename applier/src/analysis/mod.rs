//! Canary analysis: deciding from two sets of samples, the canary's and its baseline's (hosts
//! still on the old release, read over the same window), whether the canary is worse.
//!
//! [`compare`] runs a one-sided Mann-Whitney U test ([`stats`]) and fails the canary only when
//! the difference is significant (`p <= p_value`) **and** at least the minimum effect (the
//! difference of means, and optionally their ratio), with at least `min_samples` on each side;
//! too few samples is inconclusive, never a pass, and so is an observed effect at least the
//! minimum that is not significant (the samples cannot tell a regression from noise: passing
//! it would miss regressions whenever traffic is thin). [`threshold`] is the fallback where there is
//! no baseline (every host already new, a one-host environment): the canary's mean against a
//! fixed threshold, and the report says so. Every verdict carries its numbers.

pub mod stats;

use serde::{Deserialize, Serialize};

pub use stats::{MannWhitney, Method};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

/// Which direction of a metric is bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Worse {
    /// Error ratios, latencies, error-log rates.
    #[default]
    Higher,
    /// Throughput, cache hit ratios.
    Lower,
}

/// How one metric is judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    pub min_samples: usize,
    /// Significance level of the one-sided test.
    pub p_value: f64,
    /// Smallest difference of means (canary worse by at least this, in the metric's unit).
    pub min_effect: f64,
    /// Optionally also: canary mean at least this many times the baseline's (for `lower`:
    /// at most 1/this).
    pub min_ratio: Option<f64>,
    pub worse: Worse,
}

/// The verdict on one metric, with the numbers it was decided on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metric: String,
    pub verdict: Verdict,
    /// `mann_whitney` (with `method` exact or normal), `threshold` (no baseline).
    pub test: String,
    pub reason: String,
    pub canary_samples: usize,
    pub baseline_samples: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    /// Canary mean less baseline mean, oriented so that positive is worse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<f64>,
    /// Canary mean over baseline mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Evaluated and recorded, not gating.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// The canary's samples as read (each host's in time order): what the report draws.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_series: Vec<f64>,
    /// The baseline's samples as read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_series: Vec<f64>,
}

impl Comparison {
    fn new(metric: &str, test: &str, canary: &[f64], baseline: &[f64]) -> Comparison {
        Comparison {
            metric: metric.to_string(),
            verdict: Verdict::Inconclusive,
            test: test.to_string(),
            reason: String::new(),
            canary_samples: canary.len(),
            baseline_samples: baseline.len(),
            canary_mean: stats::mean(canary),
            baseline_mean: stats::mean(baseline),
            u: None,
            p: None,
            method: None,
            effect: None,
            ratio: None,
            threshold: None,
            shadow: false,
            canary_series: canary.to_vec(),
            baseline_series: baseline.to_vec(),
        }
    }

    /// One line with the numbers: `5xx: fail (samples 12/24, U 130, p 0.0001, effect 0.05)`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} (samples {}/{}",
            self.metric,
            verdict_str(self.verdict),
            self.canary_samples,
            self.baseline_samples
        );
        for (k, v) in [
            ("U", self.u),
            ("p", self.p),
            ("effect", self.effect),
            ("ratio", self.ratio),
            ("threshold", self.threshold),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(", {k} {}", num(v)));
            }
        }
        s.push_str(&format!("): {}", self.reason));
        if self.shadow {
            s.push_str(" [shadow]");
        }
        s
    }
}

pub fn verdict_str(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// A number in 4 significant digits.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1e4 || v.abs() < 1e-3 {
        return format!("{v:.3e}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

/// Canary against baseline over the same window.
pub fn compare(metric: &str, canary: &[f64], baseline: &[f64], rule: &Rule) -> Comparison {
    let mut c = Comparison::new(metric, "mann_whitney", canary, baseline);
    if canary.len() < rule.min_samples || baseline.len() < rule.min_samples {
        c.reason = format!(
            "too few samples (canary {}, baseline {}; at least {} each)",
            canary.len(),
            baseline.len(),
            rule.min_samples
        );
        return c;
    }
    // Orient so that "greater" is worse.
    let flip = |v: &[f64]| -> Vec<f64> {
        match rule.worse {
            Worse::Higher => v.to_vec(),
            Worse::Lower => v.iter().map(|x| -x).collect(),
        }
    };
    let Some(m) = stats::mann_whitney_greater(&flip(canary), &flip(baseline)) else {
        c.reason = "samples are not finite numbers".into();
        return c;
    };
    let (cm, bm) = (c.canary_mean.unwrap_or(0.0), c.baseline_mean.unwrap_or(0.0));
    let effect = match rule.worse {
        Worse::Higher => cm - bm,
        Worse::Lower => bm - cm,
    };
    let ratio = if bm != 0.0 {
        Some(cm / bm)
    } else if cm == 0.0 {
        Some(1.0)
    } else {
        None
    };
    c.u = Some(m.u);
    c.p = Some(m.p_greater);
    c.method = Some(m.method);
    c.effect = Some(effect);
    c.ratio = ratio;
    let significant = m.p_greater <= rule.p_value;
    let big = effect >= rule.min_effect
        && match (rule.min_ratio, rule.worse) {
            (None, _) => true,
            // No baseline mean to divide by while the canary has some: infinitely worse.
            (Some(r), Worse::Higher) => ratio.is_none_or(|x| x >= r),
            (Some(r), Worse::Lower) => ratio.is_some_and(|x| x <= 1.0 / r),
        };
    (c.verdict, c.reason) = match (significant, big) {
        (true, true) => (
            Verdict::Fail,
            format!(
                "canary worse: p <= {} and effect at least the minimum",
                rule.p_value
            ),
        ),
        (true, false) => (
            Verdict::Pass,
            "significant but smaller than the minimum effect".into(),
        ),
        // The canary looks as much worse as matters, but the samples cannot tell it from
        // noise: too little data to pass it (the no-data policy decides; `retry` reads on).
        (false, true) => (
            Verdict::Inconclusive,
            format!(
                "effect at least the minimum but not significant (p > {}): too few samples to tell",
                rule.p_value
            ),
        ),
        (false, false) => (
            Verdict::Pass,
            format!("no significant difference (p > {})", rule.p_value),
        ),
    };
    c
}

/// No baseline: the canary's mean against a fixed threshold (none configured: inconclusive).
pub fn threshold(
    metric: &str,
    canary: &[f64],
    limit: Option<f64>,
    rule: &Rule,
    why: &str,
) -> Comparison {
    let mut c = Comparison::new(metric, "threshold", canary, &[]);
    c.threshold = limit;
    let Some(limit) = limit else {
        c.reason = format!("{why}; no threshold configured to fall back to");
        return c;
    };
    if canary.len() < rule.min_samples {
        c.reason = format!(
            "{why}; too few samples for the threshold check ({} < {})",
            canary.len(),
            rule.min_samples
        );
        return c;
    }
    let m = c.canary_mean.unwrap_or(0.0);
    let over = match rule.worse {
        Worse::Higher => m > limit,
        Worse::Lower => m < limit,
    };
    (c.verdict, c.reason) = if over {
        (
            Verdict::Fail,
            format!(
                "{why}; threshold check: mean {} beyond {}",
                num(m),
                num(limit)
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "{why}; threshold check: mean {} within {}",
                num(m),
                num(limit)
            ),
        )
    };
    c
}

/// The verdict of several metrics: fail if a gating one failed, else inconclusive if a gating
/// one was, else pass. Shadow metrics never decide.
pub fn overall(results: &[Comparison]) -> Verdict {
    let gating = || results.iter().filter(|c| !c.shadow);
    if gating().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if gating().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

/// One canary analysis as recorded in the journal and the events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    pub group: String,
    pub canary: Vec<String>,
    pub baseline: Vec<String>,
    /// The window the samples were read over (RFC 3339).
    pub from: String,
    pub to: String,
    pub verdict: Verdict,
    /// What the verdict counted as after the no-data policy (`pass`, `fail`).
    pub passed: bool,
    /// Why the comparison ran as it did (`no baseline: ...`, `retried until ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub metrics: Vec<Comparison>,
}

impl AnalysisReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "canary analysis of {} ({} vs baseline {}): {}",
            self.group,
            self.canary.join(","),
            if self.baseline.is_empty() {
                "none".to_string()
            } else {
                self.baseline.join(",")
            },
            verdict_str(self.verdict)
        );
        if let Some(n) = &self.note {
            s.push_str(&format!(" ({n})"));
        }
        for m in &self.metrics {
            s.push_str("; ");
            s.push_str(&m.summary());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        min_samples: 5,
        p_value: 0.01,
        min_effect: 0.01,
        min_ratio: Some(1.5),
        worse: Worse::Higher,
    };

    #[test]
    fn a_real_regression_fails_with_its_numbers() {
        let canary = [0.10, 0.11, 0.09, 0.10, 0.12, 0.10, 0.09, 0.11];
        let base = [0.05, 0.04, 0.06, 0.05, 0.05, 0.04, 0.06, 0.05, 0.05, 0.06];
        let c = compare("5xx", &canary, &base, &RULE);
        assert_eq!(c.verdict, Verdict::Fail, "{}", c.summary());
        assert_eq!((c.canary_samples, c.baseline_samples), (8, 10));
        assert_eq!(c.u, Some(80.0));
        assert!(c.p.unwrap() < 1e-4);
        assert!((c.effect.unwrap() - 0.0515).abs() < 1e-9, "{c:?}");
        assert!(c.summary().contains("U 80"), "{}", c.summary());
    }

    #[test]
    fn equal_noise_passes_and_a_small_shift_is_below_the_effect() {
        let canary = [0.05, 0.04, 0.06, 0.05, 0.06, 0.04, 0.05];
        let base = [0.05, 0.06, 0.04, 0.05, 0.05, 0.04, 0.06, 0.05];
        let c = compare("5xx", &canary, &base, &RULE);
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.summary());
        // Significant (complete separation), but 0.002 above the baseline: below min_effect.
        let base: Vec<f64> = (0..8).map(|i| 0.05 + i as f64 * 1e-4).collect();
        let canary: Vec<f64> = base.iter().map(|x| x + 0.002).collect();
        let c = compare("5xx", &canary, &base, &RULE);
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.summary());
        assert!(c.reason.contains("minimum effect"), "{}", c.reason);
    }

    #[test]
    fn too_few_samples_is_inconclusive_never_a_pass() {
        let c = compare("5xx", &[0.5, 0.6], &[0.0; 10], &RULE);
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert!(c.reason.contains("too few samples"), "{}", c.reason);
        assert_eq!(c.p, None);
        let c = compare("5xx", &[], &[], &RULE);
        assert_eq!(c.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn a_large_effect_without_significance_is_inconclusive_never_a_pass() {
        // Twice the baseline's mean, but the samples overlap too much to be significant.
        let canary = [0.10, 0.02, 0.14, 0.06, 0.12, 0.04, 0.10, 0.08];
        let base = [0.05, 0.01, 0.09, 0.03, 0.07, 0.00, 0.06, 0.09];
        let c = compare("5xx", &canary, &base, &RULE);
        assert!(c.p.unwrap() > RULE.p_value, "{}", c.summary());
        assert!(c.effect.unwrap() >= RULE.min_effect && c.ratio.unwrap() >= 1.5);
        assert_eq!(c.verdict, Verdict::Inconclusive, "{}", c.summary());
        assert!(c.reason.contains("too few samples to tell"), "{}", c.reason);
        // A difference below the minimum effect, not significant either: a pass.
        let near: Vec<f64> = base.iter().map(|x| x + 0.005).collect();
        let c = compare("5xx", &near, &base, &RULE);
        assert_eq!(c.verdict, Verdict::Pass, "{}", c.summary());
    }

    #[test]
    fn lower_is_worse_flips_the_test() {
        let rule = Rule {
            worse: Worse::Lower,
            min_effect: 1.0,
            ..RULE
        };
        let canary = [50.0, 52.0, 49.0, 51.0, 50.0, 48.0];
        let base = [100.0, 98.0, 101.0, 99.0, 102.0, 100.0];
        assert_eq!(compare("rps", &canary, &base, &rule).verdict, Verdict::Fail);
        assert_eq!(compare("rps", &base, &canary, &rule).verdict, Verdict::Pass);
    }

    #[test]
    fn threshold_fallback_says_why() {
        let why = "no baseline: every host runs the new release";
        let c = threshold("5xx", &[0.2; 6], Some(0.05), &RULE, why);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.reason.starts_with(why), "{}", c.reason);
        assert_eq!(c.test, "threshold");
        let c = threshold("5xx", &[0.01; 6], Some(0.05), &RULE, why);
        assert_eq!(c.verdict, Verdict::Pass);
        let c = threshold("5xx", &[0.01; 6], None, &RULE, why);
        assert_eq!(c.verdict, Verdict::Inconclusive);
        let c = threshold("5xx", &[0.01; 2], Some(0.05), &RULE, why);
        assert_eq!(c.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn shadow_metrics_never_decide() {
        let mut fail = compare("a", &[1.0; 6], &[0.0; 6], &RULE);
        assert_eq!(fail.verdict, Verdict::Fail);
        let pass = compare("b", &[0.0; 6], &[0.0; 6], &RULE);
        assert_eq!(overall(&[fail.clone(), pass.clone()]), Verdict::Fail);
        fail.shadow = true;
        assert_eq!(overall(&[fail, pass]), Verdict::Pass);
    }
}
