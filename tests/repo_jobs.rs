//! Claiming jobs: concurrent claimers (threads with their own SQLite connections, as separate
//! processes would have) never get the same job, every job is claimed exactly once, and the claim
//! order is priority, then queue time, then id.
//!
//! Needs PostgreSQL: `pg_virtualenv -v 15 cargo test --test repo_jobs`.

mod common;

use dualwrite::{BridgeOptions, JobPriority, JobStatus, NewJob, Paging};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const FLUSH: Duration = Duration::from_secs(60);

#[test]
fn concurrent_claimers_never_share_a_job_and_claim_each_exactly_once() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let priorities = [JobPriority::Low, JobPriority::Normal, JobPriority::High, JobPriority::Urgent];
    let mut submitted = HashSet::new();
    for i in 0..200 {
        let job = b
            .submit_job(&NewJob { priority: Some(priorities[i % 4]), ..NewJob::new(format!("t{i}")) })
            .unwrap();
        submitted.insert(job.id);
    }

    // Four claimers: two share the main bridge (its writer mutex), two open their own bridge on
    // the same file (only SQLite's write lock stands between them and the others).
    let claimers: Vec<dualwrite::Bridge> = vec![
        b.clone(),
        b.clone(),
        common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() }),
        common::bridge_with(&db, dir.path(), BridgeOptions { replicate: false, ..Default::default() }),
    ];
    let start = std::sync::Arc::new(std::sync::Barrier::new(claimers.len()));
    let handles: Vec<_> = claimers
        .into_iter()
        .map(|c| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut mine: Vec<(Uuid, JobPriority)> = Vec::new();
                while let Some(job) = c.claim_next_job().unwrap() {
                    assert_eq!(job.status, JobStatus::Running);
                    assert!(job.started_at.is_some());
                    mine.push((job.id, job.priority));
                }
                mine
            })
        })
        .collect();
    let per_thread: Vec<Vec<(Uuid, JobPriority)>> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let mut seen = HashSet::new();
    for claims in &per_thread {
        for (id, _) in claims {
            assert!(seen.insert(*id), "job {id} was claimed twice");
        }
        // Each claimer's own claims follow the global order: priorities never go up.
        let ranks: Vec<usize> = claims.iter().map(|(_, p)| 3 - *p as usize).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "claims out of priority order: {ranks:?}");
    }
    assert_eq!(seen, submitted, "every job claimed exactly once");
    assert_eq!(per_thread.iter().map(Vec::len).sum::<usize>(), 200);
    assert!(b.claim_next_job().unwrap().is_none());
    assert!(b.list_jobs_by_status(JobStatus::Queued, Paging::default()).unwrap().is_empty());
    assert_eq!(b.list_jobs_by_status(JobStatus::Running, Paging::first(1000)).unwrap().len(), 200);

    b.flush(FLUSH).unwrap();
    common::assert_stores_equal(&b, &db);
    let running: i64 =
        db.connect().query_one("SELECT count(*) FROM jobs WHERE status = 'running'", &[]).unwrap().get(0);
    assert_eq!(running, 200);
}

#[test]
fn claim_order_is_priority_then_queue_time_then_id() {
    let db = common::migrated_db();
    let dir = tempfile::tempdir().unwrap();
    let b = common::bridge(&db, dir.path());
    let at = |s: &str| Some(format!("2026-01-01T00:00:0{s}Z"));
    let job = |p: JobPriority, queued: &str, id: Uuid| {
        b.submit_job(&NewJob { priority: Some(p), queued_at: at(queued), id: Some(id), ..NewJob::new("t") })
            .unwrap()
            .id
    };
    let ids: Vec<Uuid> = (1..=6u128).map(Uuid::from_u128).collect();
    let low = job(JobPriority::Low, "0", ids[0]);
    let normal_late = job(JobPriority::Normal, "5", ids[1]);
    let normal_early_b = job(JobPriority::Normal, "1", ids[3]);
    let normal_early_a = job(JobPriority::Normal, "1", ids[2]);
    let high = job(JobPriority::High, "9", ids[4]);
    let urgent = job(JobPriority::Urgent, "9", ids[5]);
    let order: Vec<Uuid> = std::iter::from_fn(|| b.claim_next_job().unwrap().map(|j| j.id)).collect();
    assert_eq!(order, [urgent, high, normal_early_a, normal_early_b, normal_late, low]);
    b.flush(FLUSH).unwrap();
    common::assert_stores_equal(&b, &db);
}
