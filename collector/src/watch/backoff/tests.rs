use kube::runtime::utils::Backoff as _;

use super::*;

fn refused_backoff(seed: u64) -> (GatedBackoff, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    gate.failed(true);
    let backoff = GatedBackoff::new(
        BackoffConfig::default(),
        gate.clone(),
        Jitter::with_seed(seed),
    );
    (backoff, gate)
}

/// LIST start times of a watch refused every time, as `StreamBackoff` drives it: the
/// watcher's `Ok(Init)` before each LIST resets (ungated), then the error backs off.
fn list_times(backoff: &mut GatedBackoff, until: Duration) -> Vec<Duration> {
    let mut at = Duration::ZERO;
    let mut times = Vec::new();
    while at < until {
        times.push(at);
        backoff.reset();
        at += backoff.next().expect("never ends");
    }
    times
}

#[test]
fn a_refused_list_backs_off_to_minutes_despite_resets() {
    for seed in 0..200u64 {
        let (mut backoff, _) = refused_backoff(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let times = list_times(&mut backoff, Duration::from_secs(600));
        let first_minute = times.iter().filter(|t| t.as_secs() < 60).count();
        assert!(first_minute <= 8, "seed {seed}: {times:?}");
        assert!(times.len() <= 10, "seed {seed}: {times:?}");
        // The steps reach the refusal cap: ≥ 5 minutes between the last LISTs.
        let later: Vec<Duration> = (0..3).map(|_| backoff.next().expect("a step")).collect();
        assert!(
            later.iter().all(|d| *d >= Duration::from_secs(300)),
            "{later:?}"
        );
        assert!(
            later.iter().all(|d| *d < Duration::from_secs(375)),
            "{later:?}"
        );
    }
    // Without jitter the schedule is exactly the documented one.
    let gate = Arc::new(Gate::default());
    gate.failed(true);
    let mut exact = GatedBackoff::new(
        BackoffConfig::default().without_jitter(),
        gate,
        Jitter::with_seed(1),
    );
    let secs: Vec<u64> = list_times(&mut exact, Duration::from_secs(600))
        .iter()
        .map(Duration::as_secs)
        .collect();
    assert_eq!(secs, [0, 1, 3, 7, 15, 31, 63, 127, 255, 511]);
}

#[test]
fn transient_errors_stay_within_thirty_seconds() {
    let gate = Arc::new(Gate::default());
    let mut backoff = GatedBackoff::new(BackoffConfig::default(), gate, Jitter::with_seed(7));
    let steps: Vec<f64> = (0..10)
        .map(|_| backoff.next().expect("a step").as_secs_f64())
        .collect();
    let bases = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0];
    for (step, base) in steps.iter().zip(bases) {
        assert!(
            *step >= base && *step < base * 1.25,
            "{step} for {base}: {steps:?}"
        );
    }
}

#[test]
fn only_progress_starts_over() {
    let (mut backoff, gate) = refused_backoff(3);
    backoff.by_ref().take(5).for_each(drop);
    backoff.reset();
    assert!(backoff.next().expect("a step") >= Duration::from_secs(32));
    gate.progressed();
    gate.failed(false);
    backoff.reset();
    let first = backoff.next().expect("a step");
    assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1250));
    // The gate is spent: the next reset without progress changes nothing.
    backoff.reset();
    assert!(backoff.next().expect("a step") >= Duration::from_secs(2));
}

#[test]
fn jitter_spreads_and_only_lengthens() {
    let firsts: Vec<f64> = (0..1000u64)
        .map(|seed| {
            Jitter::with_seed(seed.wrapping_mul(0x9e37_79b9))
                .lengthen(Duration::from_secs(1), 0.25)
                .as_secs_f64()
        })
        .collect();
    let min = firsts.iter().copied().fold(f64::MAX, f64::min);
    let max = firsts.iter().copied().fold(0.0, f64::max);
    assert!(
        (1.0..1.02).contains(&min) && max < 1.25 && max > 1.23,
        "{min}..{max}"
    );
    let mut buckets = [0u32; 5];
    for f in &firsts {
        buckets[(((f - 1.0) / 0.05) as usize).min(4)] += 1;
    }
    assert!(buckets.iter().all(|&n| n > 120), "{buckets:?}");
}
