//! The Mann-Whitney U test (as in Kayenta's canary judge): are the canary's samples
//! stochastically larger (worse) than the baseline's? Normal approximation with tie
//! correction and continuity correction, one-sided.

/// The verdict with its numbers, printed in rollout logs.
#[derive(Debug, Clone, PartialEq)]
pub struct MannWhitney {
    pub u: f64,
    pub z: f64,
    /// One-sided p-value for "canary is worse than baseline".
    pub p: f64,
    pub canary_median: f64,
    pub baseline_median: f64,
    pub n_canary: usize,
    pub n_baseline: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Standard normal upper tail, P(Z > z) (Abramowitz-Stegun 7.1.26 via erfc; error < 1.5e-7).
fn upper_tail(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc_abs = poly * (-x * x).exp();
    let erfc = if x >= 0.0 { erfc_abs } else { 2.0 - erfc_abs };
    erfc / 2.0
}

/// Test whether `canary` tends to be larger than `baseline` (pass `higher_is_worse =
/// false` to test for smaller). None when either side is empty or holds a non-number.
pub fn mann_whitney(
    canary: &[f64],
    baseline: &[f64],
    higher_is_worse: bool,
) -> Option<MannWhitney> {
    let (n1, n2) = (canary.len(), baseline.len());
    if n1 == 0 || n2 == 0 || canary.iter().chain(baseline).any(|v| !v.is_finite()) {
        return None;
    }
    let mut all: Vec<(f64, bool)> = canary
        .iter()
        .map(|v| (*v, true))
        .chain(baseline.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks for ties; collect tie sizes for the variance correction.
    let n = all.len();
    let mut ranks = vec![0.0; n];
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for r in ranks.iter_mut().take(j + 1).skip(i) {
            *r = avg;
        }
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let r1: f64 = all
        .iter()
        .zip(&ranks)
        .filter(|((_, is_canary), _)| *is_canary)
        .map(|(_, r)| r)
        .sum();
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u1 = r1 - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)).max(1.0));
    let sd = var.max(0.0).sqrt();
    let diff = if higher_is_worse {
        u1 - mean
    } else {
        mean - u1
    };
    // Continuity correction: half a unit towards zero.
    let z = if sd > 0.0 {
        (diff.abs() - 0.5).max(0.0) * diff.signum() / sd
    } else {
        0.0
    };
    Some(MannWhitney {
        u: u1,
        z,
        p: if sd > 0.0 { upper_tail(z) } else { 0.5 },
        canary_median: median(canary),
        baseline_median: median(baseline),
        n_canary: n1,
        n_baseline: n2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearly_worse_canary_is_significant_and_a_similar_one_is_not() {
        let baseline = [0.5, 0.6, 0.4, 0.55, 0.5, 0.45, 0.6, 0.5, 0.52, 0.48];
        let bad = [2.1, 1.9, 2.5, 2.2, 2.0, 1.8, 2.4, 2.3, 2.0, 2.2];
        let r = mann_whitney(&bad, &baseline, true).expect("samples");
        assert!(r.p < 0.001, "{r:?}");
        assert_eq!(r.u, 100.0);
        let same = [0.5, 0.55, 0.45, 0.6, 0.5, 0.4, 0.52, 0.58, 0.47, 0.5];
        let r = mann_whitney(&same, &baseline, true).expect("samples");
        assert!(r.p > 0.2, "{r:?}");
        // Better than baseline is not worse.
        let good = [0.1, 0.2, 0.1, 0.15, 0.1, 0.12, 0.2, 0.1, 0.11, 0.13];
        let r = mann_whitney(&good, &baseline, true).expect("samples");
        assert!(r.p > 0.9, "{r:?}");
        // Direction flips for throughput-like metrics.
        let r = mann_whitney(&good, &baseline, false).expect("samples");
        assert!(r.p < 0.001, "{r:?}");
    }

    #[test]
    fn known_value_matches_a_textbook_example() {
        // n1 = n2 = 5, fully separated: U = 25, sigma = sqrt(5*5*11/12) = 4.787,
        // z = (25 - 12.5 - 0.5) / 4.787 = 2.507, one-sided p = 0.0061.
        let r = mann_whitney(
            &[6.0, 7.0, 8.0, 9.0, 10.0],
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            true,
        )
        .expect("samples");
        assert!((r.z - 2.507).abs() < 0.01, "{r:?}");
        assert!((r.p - 0.0061).abs() < 0.0005, "{r:?}");
    }

    #[test]
    fn empty_or_broken_samples_give_no_verdict() {
        assert!(mann_whitney(&[], &[1.0], true).is_none());
        assert!(mann_whitney(&[f64::NAN], &[1.0], true).is_none());
    }
}
