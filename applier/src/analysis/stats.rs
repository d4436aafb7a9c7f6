//! The Mann-Whitney U test (Wilcoxon rank-sum), one-sided: is the first sample stochastically
//! greater than the second?
//!
//! Ranks are mid-ranks, so ties share their average rank. Small samples (`n1 + n2 <=
//! EXACT_MAX`) get the exact p-value: the permutation distribution of the rank sum,
//! conditional on the ties actually present, counted by dynamic programming over doubled
//! (integer) ranks. Larger ones get the normal approximation with the tie correction of the
//! variance and a continuity correction.

/// Largest combined sample size for which the exact distribution is counted.
pub const EXACT_MAX: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Exact,
    Normal,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: the number of (x, y) pairs with x > y, ties counting one half.
    pub u: f64,
    /// P(U >= u) when both samples come from one distribution.
    pub p_greater: f64,
    pub method: Method,
    /// Whether any two values of the pooled samples are equal.
    pub ties: bool,
}

/// Mid-ranks (1-based) of `pooled` and the sizes of its groups of ties.
pub fn mid_ranks(pooled: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..pooled.len()).collect();
    idx.sort_by(|&a, &b| pooled[a].total_cmp(&pooled[b]));
    let mut ranks = vec![0.0; pooled.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && pooled[idx[j]] == pooled[idx[i]] {
            j += 1;
        }
        // Positions i..j (0-based) share ranks i+1..=j: their mean is (i + 1 + j) / 2.
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        if j - i > 1 {
            ties.push(j - i);
        }
        i = j;
    }
    (ranks, ties)
}

/// The one-sided test that `x` tends to be greater than `y`; `None` when either is empty or
/// holds a value that is not finite.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (n1, n2) = (x.len(), y.len());
    let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
    let (ranks, ties) = mid_ranks(&pooled);
    let r1: f64 = ranks[..n1].iter().sum();
    let u = r1 - (n1 * (n1 + 1)) as f64 / 2.0;
    let has_ties = !ties.is_empty();
    let (p, method) = if n1 + n2 <= EXACT_MAX {
        (exact_p(&ranks, n1, r1), Method::Exact)
    } else {
        (normal_p(u, n1, n2, &ties), Method::Normal)
    };
    Some(MannWhitney {
        u,
        p_greater: p.clamp(0.0, 1.0),
        method,
        ties: has_ties,
    })
}

/// P(R1 >= r1) over every way of choosing `n1` of the pooled ranks, all equally likely.
fn exact_p(ranks: &[f64], n1: usize, r1: f64) -> f64 {
    let doubled: Vec<usize> = ranks.iter().map(|r| (r * 2.0).round() as usize).collect();
    let total: usize = doubled.iter().sum();
    // ways[k][s]: subsets of k ranks seen so far whose doubled sum is s.
    let mut ways = vec![vec![0.0f64; total + 1]; n1 + 1];
    ways[0][0] = 1.0;
    for (i, &d) in doubled.iter().enumerate() {
        for k in (1..=n1.min(i + 1)).rev() {
            let (lo, hi) = ways.split_at_mut(k);
            let prev = &lo[k - 1];
            let cur = &mut hi[0];
            for s in (d..=total).rev() {
                let w = prev[s - d];
                if w != 0.0 {
                    cur[s] += w;
                }
            }
        }
    }
    let observed = (r1 * 2.0).round() as usize;
    let all: f64 = ways[n1].iter().sum();
    let tail: f64 = ways[n1][observed.min(total + 1)..].iter().sum();
    tail / all
}

/// Normal approximation of P(U >= u), with the tie-corrected variance and a continuity
/// correction; 1 when every value is tied (no evidence either way).
fn normal_p(u: f64, n1: usize, n2: usize, ties: &[usize]) -> f64 {
    let (a, b) = (n1 as f64, n2 as f64);
    let n = a + b;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>() / (n * (n - 1.0));
    let var = a * b / 12.0 * ((n + 1.0) - tie_term);
    if var <= 0.0 {
        return 1.0;
    }
    let z = (u - a * b / 2.0 - 0.5) / var.sqrt();
    upper_tail(z)
}

/// P(Z >= z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Chebyshev fit, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

pub fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn mid_ranks_share_ties() {
        let (r, t) = mid_ranks(&[3.0, 1.0, 3.0, 2.0, 3.0]);
        assert_eq!(r, vec![4.0, 1.0, 4.0, 2.0, 4.0]);
        assert_eq!(t, vec![3]);
    }

    #[test]
    fn exact_small_samples_without_ties() {
        // Complete separation, 3 vs 3: only 1 of C(6,3) = 20 arrangements is as extreme.
        let m = mann_whitney_greater(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m.u, 9.0);
        assert_eq!(m.method, Method::Exact);
        assert!(close(m.p_greater, 0.05, 1e-12), "{m:?}");
        // The other direction: every arrangement is at least as extreme.
        let m = mann_whitney_greater(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).unwrap();
        assert_eq!(m.u, 0.0);
        assert!(close(m.p_greater, 1.0, 1e-12));
        // 2 vs 2, x = {2, 4}, y = {1, 3}: U = 3; U >= 3 in 2 of C(4,2) = 6 arrangements.
        let m = mann_whitney_greater(&[2.0, 4.0], &[1.0, 3.0]).unwrap();
        assert_eq!(m.u, 3.0);
        assert!(close(m.p_greater, 2.0 / 6.0, 1e-12), "{m:?}");
        // One value each.
        let m = mann_whitney_greater(&[2.0], &[1.0]).unwrap();
        assert!(close(m.p_greater, 0.5, 1e-12));
    }

    #[test]
    fn exact_with_ties_is_conditional_on_them() {
        // x = {1, 2}, y = {1, 1}: pooled mid-ranks 2, 4 | 2, 2 (three 1s share rank 2).
        // U = R1 - 3 = 6 - 3 = 3. The 6 ways to pick two ranks of {2, 2, 2, 4}: three give
        // sum 6 (2 + 4), three give 4; so P(R1 >= 6) = 1/2.
        let m = mann_whitney_greater(&[1.0, 2.0], &[1.0, 1.0]).unwrap();
        assert!(m.ties);
        assert_eq!(m.u, 3.0);
        assert!(close(m.p_greater, 0.5, 1e-12), "{m:?}");
        // Everything tied: no evidence.
        let m = mann_whitney_greater(&[0.0; 5], &[0.0; 7]).unwrap();
        assert_eq!(m.u, 17.5);
        assert!(close(m.p_greater, 1.0, 1e-12), "{m:?}");
    }

    #[test]
    fn normal_approximation_agrees_with_the_exact_count() {
        // 30 vs 30 without ties, interleaved with a shift: compute both ways.
        let x: Vec<f64> = (0..30).map(|i| i as f64 + 0.5 + 4.0).collect();
        let y: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let exact = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(exact.method, Method::Exact);
        let (ranks, ties) = mid_ranks(&x.iter().chain(&y).copied().collect::<Vec<_>>());
        assert!(ties.is_empty());
        let _ = ranks;
        let approx = normal_p(exact.u, 30, 30, &ties);
        assert!(
            close(exact.p_greater, approx, 0.003),
            "exact {} normal {approx}",
            exact.p_greater
        );
        // Past EXACT_MAX the normal approximation is used.
        let x: Vec<f64> = (0..40).map(|i| i as f64 + 0.25).collect();
        let y: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let m = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(m.method, Method::Normal);
        // U = 40*41/2 + ... : x_i beats y_0..=y_i, so U = sum(i + 1) = 820; mean 800.
        assert_eq!(m.u, 820.0);
        let sd = (40.0f64 * 40.0 * 81.0 / 12.0).sqrt();
        assert!(close(
            m.p_greater,
            upper_tail((820.0 - 800.0 - 0.5) / sd),
            1e-12
        ));
        assert!(m.p_greater > 0.3 && m.p_greater < 0.5, "{m:?}");
    }

    #[test]
    fn normal_approximation_corrects_for_ties() {
        // 40 zeros and 40 ones against 80 zeros: heavy ties.
        let mut x = vec![0.0; 40];
        x.extend(vec![1.0; 40]);
        let y = vec![0.0; 80];
        let m = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(m.method, Method::Normal);
        assert!(m.ties);
        // U = 40 ones beating 80 zeros + 40*80/2 for the tied zeros = 3200 + 1600.
        assert_eq!(m.u, 4800.0);
        let (n, t0, t1) = (160.0f64, 120.0f64, 40.0f64);
        let tie = ((t0.powi(3) - t0) + (t1.powi(3) - t1)) / (n * (n - 1.0));
        let sd = (80.0 * 80.0 / 12.0 * ((n + 1.0) - tie)).sqrt();
        let want = upper_tail((4800.0 - 3200.0 - 0.5) / sd);
        assert!(close(m.p_greater, want, 1e-12), "{} vs {want}", m.p_greater);
        assert!(m.p_greater < 1e-9);
    }

    #[test]
    fn upper_tail_values() {
        assert!(close(upper_tail(0.0), 0.5, 1e-7));
        assert!(close(upper_tail(1.959964), 0.025, 1e-6));
        assert!(close(upper_tail(-1.644854), 0.95, 1e-6));
    }

    #[test]
    fn refuses_empty_and_non_finite_samples() {
        assert!(mann_whitney_greater(&[], &[1.0]).is_none());
        assert!(mann_whitney_greater(&[f64::NAN], &[1.0]).is_none());
    }
}
