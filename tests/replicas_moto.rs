//! Leases for replicas, through the real DynamoDB SDK against moto on 127.0.0.1:
//! `coxswain init` tables, one winner per race, takeover only after expiry with a new
//! fencing token, and a replica that lost its lease cannot write.

mod common;

use chrono::{Duration, Utc};
use common::{sdk_config, Moto};
use coxswain::lease::{create_tables, Lease, Leases};

async fn leases(moto: &Moto, replica: &str) -> Leases {
    let cfg = sdk_config(&moto.endpoint()).await;
    Leases::new(
        aws_sdk_dynamodb::Client::new(&cfg),
        "coxswain",
        replica,
        Duration::seconds(15),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_creates_the_tables_once() {
    let moto = Moto::start();
    let cfg = sdk_config(&moto.endpoint()).await;
    let client = aws_sdk_dynamodb::Client::new(&cfg);
    let created = create_tables(&client, "coxswain").await.expect("create");
    assert_eq!(created, vec!["coxswain-leases", "coxswain-state"]);
    let again = create_tables(&client, "coxswain")
        .await
        .expect("idempotent");
    assert!(again.is_empty(), "{again:?}");
    // And through the command line, against the same endpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_coxswain"))
        .args([
            "init",
            "--prefix",
            "other",
            "--region",
            "us-east-1",
            "--endpoint-url",
        ])
        .arg(moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("created other-leases") && text.contains("created other-state"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_for_each_fleet_never_both_win() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    create_tables(
        &aws_sdk_dynamodb::Client::new(&sdk_config(&moto.endpoint()).await),
        "coxswain",
    )
    .await
    .expect("tables");
    let now = Utc::now();
    let mut wins = (0, 0);
    for i in 0..20 {
        let fleet = format!("fleet-{i}");
        let (ra, rb) = tokio::join!(a.take(&fleet, now), b.take(&fleet, now));
        let (ra, rb) = (ra.expect("a answered"), rb.expect("b answered"));
        assert!(
            ra.is_some() != rb.is_some(),
            "{fleet}: exactly one winner: {ra:?} / {rb:?}"
        );
        wins.0 += usize::from(ra.is_some());
        wins.1 += usize::from(rb.is_some());
        let held = ra.or(rb).expect("a winner");
        assert_eq!(held.version, 1);
        let stored = a.current(&fleet).await.expect("read").expect("item");
        assert_eq!(stored, held);
    }
    println!("race wins: a {} b {}", wins.0, wins.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_moves_only_after_expiry_and_the_old_owner_is_fenced_off() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    create_tables(
        &aws_sdk_dynamodb::Client::new(&sdk_config(&moto.endpoint()).await),
        "coxswain",
    )
    .await
    .expect("tables");
    let t0 = Utc::now();
    let la: Lease = a.take("web", t0).await.expect("ok").expect("free lease");
    // While it is held, the other replica cannot take it; the owner renews.
    assert_eq!(
        b.take("web", t0 + Duration::seconds(5)).await.expect("ok"),
        None
    );
    let la = a
        .renew(&la, t0 + Duration::seconds(10))
        .await
        .expect("ok")
        .expect("owner renews");
    assert_eq!(la.version, 1);
    assert!(a
        .fenced_put(&la, "rollout#web", "step 2", t0 + Duration::seconds(11))
        .await
        .expect("ok"));
    // The owner stalls (a long GC pause, a partition): after expiry the other takes over.
    let t1 = t0 + Duration::seconds(40);
    let lb = b.take("web", t1).await.expect("ok").expect("expired lease");
    assert_eq!(lb.owner, "replica-b");
    assert_eq!(lb.version, 2, "a new fencing token");
    // The old owner wakes up: it can neither renew nor write, even with time it thinks it has.
    assert_eq!(a.renew(&la, t1).await.expect("ok"), None);
    assert!(!a
        .fenced_put(
            &la,
            "rollout#web",
            "step 3 (stale)",
            t0 + Duration::seconds(12)
        )
        .await
        .expect("ok"));
    assert!(b
        .fenced_put(&lb, "rollout#web", "rolled back by b", t1)
        .await
        .expect("ok"));
    let (body, fence, writer) = b
        .get_state("rollout#web")
        .await
        .expect("ok")
        .expect("state");
    assert_eq!(
        (body.as_str(), fence, writer.as_str()),
        ("rolled back by b", 2, "replica-b")
    );
    // Released on shutdown: the next taker does not wait for expiry.
    b.release(&lb).await.expect("release");
    let again = a
        .take("web", t1 + Duration::seconds(1))
        .await
        .expect("ok")
        .expect("released");
    assert_eq!(again.version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_stop_heartbeating_drop_out() {
    let moto = Moto::start();
    let a = leases(&moto, "replica-a").await;
    let b = leases(&moto, "replica-b").await;
    create_tables(
        &aws_sdk_dynamodb::Client::new(&sdk_config(&moto.endpoint()).await),
        "coxswain",
    )
    .await
    .expect("tables");
    let t0 = Utc::now();
    a.heartbeat(t0).await.expect("hb");
    b.heartbeat(t0).await.expect("hb");
    assert_eq!(
        a.live_replicas(t0).await.expect("scan"),
        vec!["replica-a", "replica-b"]
    );
    let t1 = t0 + Duration::seconds(20);
    a.heartbeat(t1).await.expect("hb");
    assert_eq!(b.live_replicas(t1).await.expect("scan"), vec!["replica-a"]);
}
