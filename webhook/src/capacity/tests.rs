//! The model on real kube-apiserver v1.20.2 metrics (recorded around 600 LISTs made as a
//! service account: webhook/tests/fixtures/apf/), and on 1.26+ metrics written from the
//! metric definitions (no such server runs here).

use super::{
    apf::{self, Generation, LevelSample},
    flowschema::{FlowSchemaList, Placement, place},
    model::{self, Constraint},
    *,
};

const BEFORE: &str = include_str!("../../tests/fixtures/apf/v1.20.2-before-load.prom");
const AFTER: &str = include_str!("../../tests/fixtures/apf/v1.20.2-after-600-lists.prom");
const FLOW_SCHEMAS: &str = include_str!("../../tests/fixtures/apf/v1.20.2-flowschemas.json");

/// The scrape time each fixture's first line records.
fn scraped_at(text: &str) -> f64 {
    text.lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|t| t.parse().ok())
        .expect("a fixture's first line ends with its scrape time")
}

fn scrape(text: &str) -> Scrape {
    apf::parse(text, scraped_at(text)).expect("a 1.20 API server's metrics")
}

#[test]
fn reads_every_limited_level_of_a_1_20_server() {
    let after = scrape(AFTER);
    assert_eq!(after.generation, Generation::Requests);
    let levels: Vec<&str> = after.levels.keys().map(String::as_str).collect();
    assert_eq!(
        levels,
        [
            "catch-all",
            "global-default",
            "leader-election",
            "system",
            "workload-high",
            "workload-low"
        ],
        "exempt has no limit and is not judged"
    );
    let low = &after.levels["workload-low"];
    assert_eq!(low.seats, 293.0);
    assert_eq!(low.dispatched_total, 650.0);
    assert_eq!(low.execution_seconds_count, 650.0);
}

#[test]
fn capacity_of_a_1_20_level_by_littles_law() {
    let (before, after) = (scrape(BEFORE), scrape(AFTER));
    let levels = capacity(&before, &after, DEFAULT_TARGET_UTILIZATION);
    let low = &levels["workload-low"];
    let window = after.at - before.at;
    assert!((window - 4.51).abs() < 0.01, "{window}");
    // 600 LISTs in the window.
    assert!((low.in_use - 600.0 / window).abs() < 1e-9, "{low:?}");
    let per_request =
        (0.5312215140000005 - before.levels["workload-low"].execution_seconds_sum) / 600.0;
    assert_eq!(low.seat_seconds_per_request, Some(per_request));
    let capacity = 293.0 / per_request;
    assert_eq!(low.capacity, Some(capacity));
    assert_eq!(low.headroom, Some(capacity * 0.7 - 600.0 / window));
    assert_eq!(low.constraint, None);
    // A level that served nothing in the window is judged on its lifetime mean; one
    // that never served has no capacity figure at all.
    let system = &levels["system"];
    assert_eq!(system.in_use, 0.0);
    assert_eq!(system.capacity, None, "{system:?}");
}

/// 1.26+ names, written from the metric definitions (labelled as such: no 1.26 server
/// runs here): seats after borrowing, seats per request from the work estimate, and a
/// level that rejected requests has no headroom.
const SEATS_GENERATION: &str = "\
# written from the 1.26+ metric definitions, not recorded
apiserver_flowcontrol_nominal_limit_seats{priority_level=\"workload-low\"} 245
apiserver_flowcontrol_current_limit_seats{priority_level=\"workload-low\"} 200
apiserver_flowcontrol_nominal_limit_seats{priority_level=\"global-default\"} 49
apiserver_flowcontrol_current_executing_seats{priority_level=\"workload-low\"} 12
apiserver_flowcontrol_dispatched_requests_total{flow_schema=\"service-accounts\",priority_level=\"workload-low\"} DISPATCHED
apiserver_flowcontrol_rejected_requests_total{flow_schema=\"service-accounts\",priority_level=\"workload-low\",reason=\"queue-full\"} REJECTED
apiserver_flowcontrol_request_execution_seconds_sum{flow_schema=\"service-accounts\",priority_level=\"workload-low\",type=\"regular\"} EXEC_SUM
apiserver_flowcontrol_request_execution_seconds_count{flow_schema=\"service-accounts\",priority_level=\"workload-low\",type=\"regular\"} DISPATCHED
apiserver_flowcontrol_work_estimated_seats_sum{flow_schema=\"service-accounts\",priority_level=\"workload-low\"} SEATS_SUM
apiserver_flowcontrol_work_estimated_seats_count{flow_schema=\"service-accounts\",priority_level=\"workload-low\"} DISPATCHED
";

fn seats_scrape(at: f64, dispatched: u64, rejected: u64, exec_sum: f64, seats_sum: f64) -> Scrape {
    let text = SEATS_GENERATION
        .replace("DISPATCHED", &dispatched.to_string())
        .replace("REJECTED", &rejected.to_string())
        .replace("EXEC_SUM", &exec_sum.to_string())
        .replace("SEATS_SUM", &seats_sum.to_string());
    apf::parse(&text, at).expect("1.26+ metrics")
}

#[test]
fn capacity_of_a_1_26_level_in_seats() {
    // 1,000 requests in 10 s, 0.05 s each, 2 seats each: 0.1 seat-seconds per request.
    let before = seats_scrape(100.0, 1_000, 0, 50.0, 2_000.0);
    let after = seats_scrape(110.0, 2_000, 0, 100.0, 4_000.0);
    assert_eq!(after.generation, Generation::Seats);
    assert_eq!(
        after.levels["workload-low"].seats, 200.0,
        "the borrowed limit"
    );
    assert_eq!(
        after.levels["global-default"].seats, 49.0,
        "the nominal one"
    );
    let low = &capacity(&before, &after, 0.7)["workload-low"];
    assert_eq!(low.seat_seconds_per_request, Some(0.1));
    assert_eq!(low.capacity, Some(2_000.0));
    assert_eq!(low.in_use, 100.0);
    assert_eq!(low.headroom, Some(1_300.0));

    let rejecting = seats_scrape(110.0, 2_000, 5, 100.0, 4_000.0);
    let low = &capacity(&before, &rejecting, 0.7)["workload-low"];
    assert_eq!(low.constraint, Some(Constraint::Rejecting));
    assert_eq!(low.headroom, Some(0.0));
}

#[test]
fn requests_waiting_longer_than_they_run_leave_no_headroom() {
    let sample = |in_queue, waited: f64, ran: f64, n: f64| LevelSample {
        seats: 10.0,
        in_queue,
        dispatched_total: n,
        execution_seconds_sum: ran,
        execution_seconds_count: n,
        wait_seconds_sum: waited,
        wait_seconds_count: n,
        ..LevelSample::default()
    };
    let scrape = |at: f64, level: LevelSample| Scrape {
        at,
        generation: Generation::Requests,
        levels: [("l".to_owned(), level)].into(),
    };
    // 100 requests ran 0.01 s each and waited 0.02 s each.
    let before = scrape(0.0, sample(0.0, 0.0, 0.0, 0.0));
    let after = scrape(10.0, sample(0.0, 2.0, 1.0, 100.0));
    let l = &model::capacity(&before, &after, 0.7)["l"];
    assert_eq!(
        (l.constraint, l.headroom),
        (Some(Constraint::Queueing), Some(0.0))
    );
    // Waiting less than running is no constraint; queued at both ends is.
    let after = scrape(10.0, sample(0.0, 0.5, 1.0, 100.0));
    assert_eq!(model::capacity(&before, &after, 0.7)["l"].constraint, None);
    let (before, after) = (
        scrape(0.0, sample(3.0, 0.0, 0.0, 0.0)),
        scrape(10.0, sample(2.0, 0.5, 1.0, 100.0)),
    );
    assert_eq!(
        model::capacity(&before, &after, 0.7)["l"].constraint,
        Some(Constraint::Queueing)
    );
}

#[test]
fn metrics_without_apf_say_why() {
    let error = apf::parse("process_cpu_seconds_total 1\n", 0.0).expect_err("no APF");
    assert!(
        error
            .to_string()
            .contains("API Priority and Fairness is off"),
        "{error}"
    );
    let error = apf::parse(
        "apiserver_flowcontrol_request_concurrency_limit{x=1} 2\n",
        0.0,
    )
    .expect_err("bad line");
    assert!(error.to_string().contains("line 1"), "{error}");
}

/// Found by the `apiserver_metrics` fuzz target: a limit of `+Inf` gave an infinite
/// capacity and headroom, so any change fit. A series the model reads that is not a
/// finite number ≥ 0 makes the scrape an error naming it (the source fails open).
#[test]
fn a_series_that_is_not_a_finite_count_is_an_error_naming_it() {
    let limit = r#"apiserver_flowcontrol_request_concurrency_limit{priority_level="workload-low"}"#;
    for bad in ["+Inf", "NaN", "-5"] {
        let text = BEFORE
            .lines()
            .map(|l| match l.strip_prefix(limit) {
                Some(_) => format!("{limit} {bad}"),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(text, BEFORE, "the fixture has workload-low's limit");
        let error = apf::parse(&text, 0.0).expect_err(bad);
        assert!(
            error.to_string().contains(
                "apiserver_flowcontrol_request_concurrency_limit of priority level workload-low"
            ),
            "{error}"
        );
    }
    // Series the model does not read may be anything.
    let text = format!(
        "{BEFORE}\napiserver_flowcontrol_priority_level_request_count_watermarks_sum{{phase=\"waiting\",priority_level=\"global-default\"}} NaN\n"
    );
    assert!(apf::parse(&text, 0.0).is_ok());
}

fn schemas() -> Vec<FlowSchema> {
    serde_json::from_str::<FlowSchemaList>(FLOW_SCHEMAS)
        .expect("1.20's FlowSchemas")
        .items
}

fn placed(schema: &str, level: &str) -> Option<Placement> {
    Some(Placement {
        flow_schema: schema.into(),
        priority_level: level.into(),
    })
}

#[test]
fn service_accounts_land_where_a_1_20_server_puts_them() {
    let schemas = schemas();
    assert_eq!(
        place(&schemas, "apps", "agent"),
        placed("service-accounts", "workload-low"),
        "what the recorded load really used"
    );
    // kube-system's service accounts: the narrower leader-election schemas (precedence
    // 100 and 200) cover leases and configmaps only, so their general requests go to
    // kube-system-service-accounts (900).
    assert_eq!(
        place(&schemas, "kube-system", "coredns"),
        placed("kube-system-service-accounts", "workload-high")
    );
}

#[test]
fn precedence_then_name_decide_and_subjects_must_match() {
    let mut schemas = schemas();
    let custom = |name: &str, precedence: i64, subject: &str| -> FlowSchema {
        serde_json::from_str(&format!(
            r#"{{"metadata":{{"name":"{name}"}},"spec":{{"matchingPrecedence":{precedence},
            "priorityLevelConfiguration":{{"name":"{name}-level"}},
            "rules":[{{"subjects":[{subject}],
            "resourceRules":[{{"verbs":["*"],"apiGroups":["*"],"resources":["*"],"namespaces":["*"],"clusterScope":true}}]}}]}}}}"#
        ))
        .expect("a FlowSchema")
    };
    let agent = r#"{"kind":"ServiceAccount","serviceAccount":{"namespace":"apps","name":"agent"}}"#;
    schemas.push(custom("b-agents", 500, agent));
    schemas.push(custom("a-agents", 500, agent));
    assert_eq!(
        place(&schemas, "apps", "agent"),
        placed("a-agents", "a-agents-level")
    );
    assert_eq!(
        place(&schemas, "apps", "other"),
        placed("service-accounts", "workload-low"),
        "another service account of the namespace is not a subject"
    );
    let team = r#"{"kind":"Group","group":{"name":"system:serviceaccounts:team"}}"#;
    schemas.push(custom("team", 400, team));
    assert_eq!(place(&schemas, "team", "x"), placed("team", "team-level"));
    assert_eq!(place(&[], "team", "x"), None, "no schema takes it");
}

#[test]
fn one_scrape_gives_lifetime_capacity_and_in_use_from_what_executes() {
    let after = scrape(AFTER);
    let low = &capacity_at(&after, 0.7)["workload-low"];
    let per_request = 0.5312215140000005 / 650.0;
    assert_eq!(low.seat_seconds_per_request, Some(per_request));
    assert_eq!(low.capacity, Some(293.0 / per_request));
    assert_eq!(low.in_use, 0.0, "nothing executing at the scrape");
    // Little's law the other way round: 2 executing at 10 ms each is 200 requests/s; a
    // request waiting in a queue now leaves no headroom.
    let mut busy = after.clone();
    let level = busy.levels.get_mut("workload-low").unwrap();
    (
        level.executing,
        level.execution_seconds_sum,
        level.execution_seconds_count,
    ) = (2.0, 1.0, 100.0);
    level.in_queue = 1.0;
    let low = &capacity_at(&busy, 0.7)["workload-low"];
    assert!((low.in_use - 200.0).abs() < 1e-9, "{low:?}");
    assert_eq!(
        (low.constraint, low.headroom),
        (Some(Constraint::Queueing), Some(0.0))
    );
}
