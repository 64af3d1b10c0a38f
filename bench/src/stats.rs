//! Median, minimum and maximum of repeated measurements.

/// The median, minimum and maximum of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Summarizes `values`, or returns None when there are none.
///
/// The median of an even number of values is the mean of the middle two.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    Some(Summary {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_count() {
        let summary = summarize(&[3.0, 1.0, 2.0]).expect("three values");
        assert_eq!(summary.median, 2.0);
        assert_eq!(summary.min, 1.0);
        assert_eq!(summary.max, 3.0);
    }

    #[test]
    fn summary_of_even_count() {
        let summary = summarize(&[4.0, 1.0, 2.0, 3.0]).expect("four values");
        assert_eq!(summary.median, 2.5);
    }

    #[test]
    fn summary_of_nothing() {
        assert_eq!(summarize(&[]), None);
    }
}
