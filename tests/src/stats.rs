// SPDX-License-Identifier: Apache-2.0
//! Small statistics for the benchmarks: percentiles of samples, and min / median / max of a
//! figure over several runs.

/// The `pct` percentile of `samples` (nearest rank); zero for no samples.
pub fn percentile<T: Ord + Copy + Default>(samples: &[T], pct: usize) -> T {
    if samples.is_empty() {
        return T::default();
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * pct.min(100)).div_ceil(100).max(1);
    sorted[rank - 1]
}

/// Min, median and max of `values`, or None when there are none.
pub fn summary(values: &[f64]) -> Option<[f64; 3]> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some([sorted[0], median, sorted[n - 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        assert_eq!(percentile(&samples, 50), 50);
        assert_eq!(percentile(&samples, 99), 99);
        assert_eq!(percentile(&samples, 100), 100);
        assert_eq!(percentile(&[7], 99), 7);
        assert_eq!(percentile::<u64>(&[], 50), 0);
        assert_eq!(percentile(&[-5i64, 3, -1], 50), -1);
    }

    #[test]
    fn summary_takes_the_middle_of_an_even_count() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some([1.0, 2.0, 3.0]));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some([1.0, 2.5, 4.0]));
        assert_eq!(summary(&[]), None);
    }
}
