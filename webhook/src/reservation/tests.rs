use super::*;

fn web(name: &str) -> WorkloadRef {
    WorkloadRef {
        namespace: "default".into(),
        kind: "Deployment".into(),
        name: name.into(),
    }
}

fn requests(n: f64) -> Load {
    Load {
        apiserver_requests_per_second: n,
        ..Load::ZERO
    }
}

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn at(seconds: u64) -> SystemTime {
    T0 + Duration::from_secs(1_800_000_000 + seconds)
}

#[test]
fn a_reservation_lasts_until_the_data_covers_a_rate_window_after_it() {
    let mut ledger = Ledger::default();
    ledger.reserve(Reservation {
        workload: web("a"),
        load: requests(80.0),
        admitted_at: at(0),
    });
    // Refreshes 15 s and 20 s later, and one just short of the window: still reserved.
    for seconds in [15, 20, 299] {
        ledger.expire(at(seconds));
        assert_eq!(
            ledger.pending_except(&web("b")),
            requests(80.0),
            "{seconds}"
        );
    }
    assert_eq!(
        ledger.pending_except(&web("a")),
        Load::ZERO,
        "its own is replaced"
    );
    ledger.expire(at(300));
    assert_eq!(ledger.pending_except(&web("b")), Load::ZERO);
    // Another replica's list, not yet cleaned, does not bring it back.
    ledger.merge([Reservation {
        workload: web("a"),
        load: requests(80.0),
        admitted_at: at(0),
    }]);
    assert_eq!(ledger.pending_except(&web("b")), Load::ZERO);
}

#[test]
fn merging_keeps_the_latest_admission_per_workload() {
    let mut ledger = Ledger::default();
    ledger.reserve(Reservation {
        workload: web("a"),
        load: requests(80.0),
        admitted_at: at(10),
    });
    ledger.merge([
        Reservation {
            workload: web("a"),
            load: requests(5.0),
            admitted_at: at(5),
        },
        Reservation {
            workload: web("b"),
            load: requests(7.0),
            admitted_at: at(6),
        },
    ]);
    assert_eq!(ledger.pending_except(&web("c")), requests(87.0));
}

#[test]
fn the_status_form_round_trips_to_the_millisecond() {
    let r = Reservation {
        workload: web("a"),
        load: requests(80.0),
        admitted_at: at(0) + Duration::from_millis(250),
    };
    let status = ReservationStatus::from(&r);
    assert_eq!(status.admitted_at, "2027-01-15T08:00:00.25Z");
    assert_eq!(status.reservation(), Some(r));
    let by_hand = ReservationStatus {
        admitted_at: "yesterday".into(),
        ..status
    };
    assert_eq!(by_hand.reservation(), None);
}
