use kube::{core::Status, runtime::watcher};

use super::*;

const PODS: Watched = Watched {
    resource: "pods",
    api_version: "v1",
    rbac: "deploy/collector/rbac.yaml",
};
const SLICES: Watched = Watched {
    resource: "endpointslices",
    api_version: "discovery.k8s.io/v1",
    rbac: "deploy/collector/rbac.yaml",
};

fn list_failure(code: u16, reason: &str) -> Failure {
    let mut status = Status::failure("refused", reason);
    status.code = code;
    Failure::of(&watcher::Error::InitialListFailed(kube::Error::Api(
        Box::new(status),
    )))
}

fn gone() -> Failure {
    let mut status = Status::failure("too old resource version: 1 (2)", "Expired");
    status.code = 410;
    Failure::of(&watcher::Error::WatchError(Box::new(status)))
}

#[test]
fn advice_names_what_to_grant() {
    assert_eq!(
        PODS.advice(&list_failure(403, "Forbidden")),
        "grant list/watch on pods: see deploy/collector/rbac.yaml"
    );
    assert_eq!(
        SLICES.advice(&list_failure(403, "Forbidden")),
        "grant list/watch on endpointslices.discovery.k8s.io: see deploy/collector/rbac.yaml"
    );
    assert!(
        SLICES
            .advice(&list_failure(404, "NotFound"))
            .contains("discovery.k8s.io/v1 endpointslices")
    );
    assert!(
        PODS.advice(&list_failure(401, "Unauthorized"))
            .contains("credentials")
    );
}

#[test]
fn readiness_until_listed_and_while_refused() {
    let health = Health::new(&[PODS, SLICES]);
    assert!(health.readiness().is_ready(), "idle watches do not count");
    health.started("pods");
    assert_eq!(health.readiness().problems, ["pods: not listed yet"]);
    health.failed("pods", list_failure(403, "Forbidden"));
    assert_eq!(
        health.readiness().problems,
        [
            "pods: never listed: 403 Forbidden (grant list/watch on pods: see \
             deploy/collector/rbac.yaml)"
        ]
    );
    health.listed("pods");
    assert!(health.readiness().is_ready());
    assert!(health.listed_once("pods"));
    // Routine expiry does not change readiness; a relist failing again and again does.
    health.failed("pods", gone());
    assert_eq!(health.phase("pods"), Phase::Listed);
    let unavailable = list_failure(503, "ServiceUnavailable");
    for _ in 0..RELIST_FAILURES_NOT_READY - 1 {
        health.failed("pods", unavailable.clone());
    }
    assert!(health.readiness().is_ready());
    health.failed("pods", unavailable);
    assert!(
        health.readiness().problems[0].starts_with("pods: relist failed 3 times: 503"),
        "{:?}",
        health.readiness()
    );
    assert_eq!(health.errors("pods"), 5);
    assert_eq!(health.errors_for("pods", ErrorReason::Expired), 1);
    assert_eq!(health.errors_for("pods", ErrorReason::ListFailed), 4);
}

#[test]
fn not_served_is_a_state_with_a_note() {
    let health = Health::new(&[PODS, SLICES]);
    health.started("endpointslices");
    health.not_served(
        "endpointslices",
        "using core/v1 Endpoints default/kubernetes",
    );
    let readiness = health.readiness();
    assert!(readiness.is_ready());
    assert_eq!(
        readiness.notes,
        [
            "endpointslices: discovery.k8s.io/v1 not served; using core/v1 Endpoints \
             default/kubernetes"
        ]
    );
    let reports = health.reports();
    assert_eq!((reports[1].ready, reports[1].served), (None, false));
    assert_eq!((reports[0].ready, reports[0].served), (None, true));
    health.started("pods");
    health.listed("pods");
    let reports = health.reports();
    assert_eq!(reports[0].ready, Some(true));
    assert_eq!(reports[0].lists, 0, "lists are counted when they start");
    assert_eq!(reports[0].events, 1);
    assert!(reports[0].last_event_unix_seconds.is_some());
    assert_eq!(reports[0].errors.len(), ErrorReason::ALL.len());
}
