//! Several `aims server` processes sharing one PostgreSQL database behave as one deployment:
//! a task token issued by one replica works at another, and a revocation made on one is
//! refused by the other within a second (each replica follows the store's revocation log).
//!
//! Needs PostgreSQL: `AIMS_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test`, run
//! with `--include-ignored`. The benchmark `revocation_propagation` measures the same path.

use std::time::{Duration, Instant};

use crate::replica_kit::{Deployment, database_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: set AIMS_TEST_DATABASE_URL and run with --include-ignored"]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other() {
    let deployment = Deployment::start(&database_url().await).await;
    let planner = deployment.planner().await;
    let token = deployment.exchange(&planner, 0).await;

    // Issued by the first replica, accepted by the second.
    assert_eq!(deployment.decide(&planner, &token, 1).await, 200);

    let jti = crate::replica_kit::jti(&token);
    let revoked_at = Instant::now();
    deployment.revoke_token(0, &jti).await;
    // The replica that revoked refuses at once.
    assert_eq!(deployment.decide(&planner, &token, 0).await, 401);
    // The other within a second.
    let delay = loop {
        let status = deployment.decide(&planner, &token, 1).await;
        if status == 401 {
            break revoked_at.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the second replica still accepts the revoked token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    eprintln!("revocation reached the second replica after {delay:?}");

    // Ending a task on the second replica refuses its tokens on the first.
    let other = deployment.exchange(&planner, 1).await;
    assert_eq!(deployment.decide(&planner, &other, 0).await, 200);
    deployment
        .end_task(1, &crate::replica_kit::task_id(&other))
        .await;
    let ended = Instant::now();
    while deployment.decide(&planner, &other, 0).await != 401 {
        assert!(
            ended.elapsed() < Duration::from_secs(1),
            "task end not seen within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
