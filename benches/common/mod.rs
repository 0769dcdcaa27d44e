//! Settings shared by the criterion benches, so that all of them together
//! stay under about three minutes at default settings on a 2-core machine.

use std::time::Duration;

use criterion::Criterion;

/// 20 samples over 2 s after a 1 s warm-up. Set here rather than on each
/// group so that `--measurement-time`, `--sample-size` and `--quick` on the
/// command line still override it.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1))
}
