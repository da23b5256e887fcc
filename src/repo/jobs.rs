//! jobs and job_logs: submit, claim, move along the status workflow, report progress, log.

use super::{changes, now, transition, value_set, Entity, Paging, TypedRows, TypedWrite};
use crate::bridge::Bridge;
use crate::error::{Error, Result};
use crate::schema::{Filter, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

value_set! {
    /// `jobs.status`: queued → running | cancelled; running → succeeded | failed | cancelled.
    JobStatus for "jobs"."status" {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl JobStatus {
    /// The statuses a job in this status may move to.
    pub fn allowed_next(self) -> &'static [JobStatus] {
        use JobStatus::*;
        match self {
            Queued => &[Running, Cancelled],
            Running => &[Succeeded, Failed, Cancelled],
            Succeeded | Failed | Cancelled => &[],
        }
    }

    pub fn is_terminal(self) -> bool {
        self.allowed_next().is_empty()
    }
}

value_set! {
    /// `jobs.priority`; claims take urgent first, then high, normal, low.
    JobPriority for "jobs"."priority" { Low = "low", Normal = "normal", High = "high", Urgent = "urgent" }
}

value_set! {
    /// `job_logs.level`.
    LogLevel for "job_logs"."level" { Debug = "debug", Info = "info", Warning = "warning", Error = "error" }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    pub payload: Value,
    pub status: JobStatus,
    /// Exact decimal from 0 to 100.
    pub progress: String,
    pub owner_id: Option<Uuid>,
    pub queued_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub priority: JobPriority,
}

impl Entity for Job {
    const TABLE: &'static str = "jobs";
}

/// A job to submit; it starts `queued` with progress 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    #[serde(rename = "type")]
    pub job_type: String,
    /// Default `{}` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Default `normal`.
    pub priority: Option<JobPriority>,
    pub owner_id: Option<Uuid>,
    /// Generated when absent.
    pub id: Option<Uuid>,
    /// Now when absent.
    pub queued_at: Option<String>,
}

impl NewJob {
    pub fn new(job_type: impl Into<String>) -> NewJob {
        NewJob { job_type: job_type.into(), ..NewJob::default() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobLog {
    pub id: Uuid,
    pub job_id: Uuid,
    pub level: LogLevel,
    pub step: Option<String>,
    pub message: String,
    pub context: Value,
    pub created_at: String,
}

impl Entity for JobLog {
    const TABLE: &'static str = "job_logs";
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewJobLog {
    pub job_id: Uuid,
    pub level: LogLevel,
    pub message: String,
    pub step: Option<String>,
    /// Default `{}` when left out; `Some(Value::Null)` is refused.
    #[serde(default, deserialize_with = "crate::repo::json_given", skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Generated when absent.
    pub id: Option<Uuid>,
    /// Now when absent.
    pub created_at: Option<String>,
}

impl NewJobLog {
    pub fn new(job_id: Uuid, level: LogLevel, message: impl Into<String>) -> NewJobLog {
        NewJobLog {
            job_id,
            level,
            message: message.into(),
            step: None,
            context: None,
            id: None,
            created_at: None,
        }
    }
}

/// The next queued job in claim order: priority rank, then queue time, then id. The same
/// predicate and expression as the partial index `jobs_claim_idx`, so the claim reads one index
/// entry.
fn claim_next() -> Filter {
    Filter::new()
        .eq_value_set_member("status", JobStatus::Queued.as_str())
        .ranked("priority", CLAIM_RANK)
        .ascending("queued_at")
        .ascending("id")
        .limit(1)
}

/// The priorities a claim takes first, most urgent first (`low` comes after them).
const CLAIM_RANK: &[&str] = &["urgent", "high", "normal"];

/// A progress value in its canonical form (an exact decimal, as PostgreSQL's numeric keeps it),
/// or an error naming `jobs.progress`: the registry's rule holds it from 0 to 100.
fn progress_value(progress: &str) -> Result<String> {
    let mut row = Row::new();
    row.insert("progress".into(), Value::String(progress.to_string()));
    match changes::<Job>(row)?.remove("progress") {
        Some(Value::String(d)) => Ok(d),
        _ => Err(Error::Internal("a validated progress is not a decimal string".into())),
    }
}

impl Bridge {
    /// Queue a job (status `queued`, progress 0).
    pub fn submit_job(&self, job: &NewJob) -> Result<Job> {
        self.create_entity(job)
    }

    pub fn get_job(&self, id: Uuid) -> Result<Option<Job>> {
        self.get_entity(id)
    }

    /// An owner's jobs in queue order.
    pub fn list_jobs_by_owner(&self, owner_id: Uuid, page: Paging) -> Result<Vec<Job>> {
        self.find_entities(&[("owner_id", owner_id.to_string().into())], &["queued_at"], false, page)
    }

    /// Jobs in one status, in queue order.
    pub fn list_jobs_by_status(&self, status: JobStatus, page: Paging) -> Result<Vec<Job>> {
        self.find_entities(&[("status", status.as_str().into())], &["queued_at"], false, page)
    }

    /// Take the next queued job (urgent > high > normal > low, then oldest, then lowest id) and
    /// mark it running, in one write transaction: SQLite's write lock, taken when the
    /// transaction begins, makes two claimers (threads or processes) never get the same job.
    pub fn claim_next_job(&self) -> Result<Option<Job>> {
        self.write(|tx| {
            let Some(job): Option<Job> = tx.first_as(&claim_next())? else { return Ok(None) };
            let mut set = Row::new();
            set.insert("status".into(), Value::String(JobStatus::Running.as_str().into()));
            set.insert("started_at".into(), Value::String(now()));
            tx.update_as(&job.id.to_string(), &changes::<Job>(set)?).map(Some)
        })
    }

    /// Move a job along its workflow (see [`JobStatus::allowed_next`]); anything else is
    /// `Error::Conflict`. `running` sets `started_at`; a final status sets `finished_at`.
    pub fn set_job_status(&self, id: Uuid, status: JobStatus) -> Result<Job> {
        let key = id.to_string();
        let t = now();
        let mut set = Row::new();
        set.insert("status".into(), Value::String(status.as_str().into()));
        if status == JobStatus::Running {
            set.insert("started_at".into(), Value::String(t.clone()));
        }
        if status.is_terminal() {
            set.insert("finished_at".into(), Value::String(t));
        }
        let set = changes::<Job>(set)?;
        let from = JobStatus::ALL.iter().filter(|s| s.allowed_next().contains(&status));
        let movable = Filter::new().in_value_set("status", from.map(|s| s.as_str()).collect());
        self.update_entity_where(&key, &set, &movable, |tx| {
            let job: Job = tx.require(&key)?;
            transition("job", id, job.status, status, job.status.allowed_next())?;
            tx.update_as(&key, &set)
        })
    }

    /// Set a job's progress: an exact decimal from 0 to 100 (`"12.5"`). A finished job's
    /// progress cannot change (`Error::Conflict`).
    pub fn set_job_progress(&self, id: Uuid, progress: &str) -> Result<Job> {
        let mut set = Row::new();
        set.insert("progress".into(), Value::String(progress_value(progress)?));
        let key = id.to_string();
        let unfinished = JobStatus::ALL.iter().filter(|s| !s.is_terminal());
        let unfinished = Filter::new().in_value_set("status", unfinished.map(|s| s.as_str()).collect());
        self.update_entity_where(&key, &set, &unfinished, |tx| {
            let job: Job = tx.require(&key)?;
            if job.status.is_terminal() {
                return Err(Error::conflict(format!(
                    "job {id} is {}: its progress can no longer change",
                    job.status
                )));
            }
            tx.update_as(&key, &set)
        })
    }

    pub fn append_job_log(&self, log: &NewJobLog) -> Result<JobLog> {
        self.create_entity(log)
    }

    /// A job's logs in (created_at, id) order, by page.
    pub fn list_job_logs(&self, job_id: Uuid, page: Paging) -> Result<Vec<JobLog>> {
        self.find_entities(&[("job_id", job_id.to_string().into())], &["created_at"], false, page)
    }

    /// Up to `limit` logs of a job that come after the log `after` in (created_at, id) order
    /// (from the first when `None`): a cursor that stays right while logs are appended.
    pub fn list_job_logs_after(&self, job_id: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<JobLog>> {
        Paging::first(limit).sql()?; // the same bounds as every list
        let logs = Filter::new().eq("job_id", job_id.to_string());
        let in_order = |f: Filter| f.ascending("created_at").ascending("id").limit(limit);
        let Some(after) = after else {
            return self.query_entities(in_order(logs));
        };
        let cursor: JobLog = self.get_entity(after)?.ok_or_else(|| Error::not_found("job_logs", after))?;
        if cursor.job_id != job_id {
            return Err(Error::invalid("after", format!("log {after} belongs to another job")));
        }
        let cursor =
            vec![("created_at", Value::String(cursor.created_at)), ("id", Value::String(after.to_string()))];
        self.query_entities(in_order(logs.after(cursor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_an_exact_decimal_from_0_to_100() {
        for (input, stored) in
            [("0", "0"), ("12.5", "12.5"), ("100", "100"), ("100.000", "100.000"), ("007.50", "7.50")]
        {
            assert_eq!(progress_value(input).unwrap(), stored);
        }
        assert_eq!(progress_value("-0.0").unwrap(), "0.0");
        assert_eq!(progress_value("99.999999").unwrap(), "99.999999");
        for bad in ["100.01", "101", "-1", "-0.5", "1000", "12,5", "abc", ""] {
            let e = progress_value(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("jobs.progress"), "{e}");
        }
    }

    #[test]
    fn job_workflow() {
        use JobStatus::*;
        assert_eq!(Queued.allowed_next(), &[Running, Cancelled]);
        assert!(Succeeded.is_terminal() && Failed.is_terminal() && Cancelled.is_terminal());
        assert!(!Running.is_terminal());
    }
}
