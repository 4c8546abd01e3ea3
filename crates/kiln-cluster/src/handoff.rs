//! Stage hand-offs between Kiln's scheduler and its executors.
//!
//! Ballista's pull-based executors learn of new work and report finished
//! tasks only when they poll, and poll every 50 ms when idle: on a cluster
//! every stage boundary waited for the next poll twice (once to report the
//! finished task, once to fetch the next stage's tasks), which was most of a
//! many-stage query's time on small data. Here:
//!
//! - an idle executor's poll is held on the scheduler ([`LongPollScheduler`])
//!   until a stage becomes runnable or [`LONG_POLL`] passes, so it gets new
//!   tasks as soon as they exist without polling often;
//! - an executor polls again as soon as one of its tasks has finished
//!   ([`WakeOnDrop`]) and, while it runs tasks (its polls then return at
//!   once), every [`POLL_INTERVAL`].

use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpc;
use ballista_core::serde::protobuf::{
    CancelJobParams, CancelJobResult, CleanJobDataParams, CleanJobDataResult,
    CreateUpdateSessionParams, CreateUpdateSessionResult, ExecuteQueryParams, ExecuteQueryResult,
    ExecutorStoppedParams, ExecutorStoppedResult, GetJobMetricsParams, GetJobMetricsResult,
    GetJobStatusParams, GetJobStatusResult, HeartBeatParams, HeartBeatResult, PollWorkParams,
    PollWorkResult, RegisterExecutorParams, RegisterExecutorResult, RemoveSessionParams,
    RemoveSessionResult, UpdateTaskStatusParams, UpdateTaskStatusResult,
};
use ballista_core::serde::scheduler::ExecutorSpecification;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// How long the scheduler holds an idle executor's poll: short against the
/// executor timeout (polls are its heartbeat) and against a graceful stop.
pub const LONG_POLL: Duration = Duration::from_millis(200);

/// How soon an executor polls again after a poll returned. An idle
/// executor's polls are held on the scheduler, so this paces only executors
/// that run tasks.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Ballista's scheduler service with idle executors' polls held until there
/// is work. `work` is notified (all waiters) when a job is submitted or a
/// stage becomes runnable: the scheduler's `on_work_available` callback.
pub struct LongPollScheduler<S> {
    inner: S,
    work: Arc<Notify>,
}

impl<S> LongPollScheduler<S> {
    pub fn new(inner: S, work: Arc<Notify>) -> Self {
        Self { inner, work }
    }
}

/// Whether the polling executor runs no task: only then can its poll wait,
/// since a poll is also how an executor reports its finished tasks.
fn idle(params: &PollWorkParams) -> bool {
    let slots = params
        .metadata
        .as_ref()
        .and_then(|m| m.specification.clone())
        .map(|s| Into::<ExecutorSpecification>::into(s).vcores)
        .unwrap_or(u32::MAX);
    params.num_free_vcores >= slots
}

#[tonic::async_trait]
impl<S: SchedulerGrpc> SchedulerGrpc for LongPollScheduler<S> {
    async fn poll_work(
        &self,
        request: Request<PollWorkParams>,
    ) -> Result<Response<PollWorkResult>, Status> {
        if !idle(request.get_ref()) {
            return self.inner.poll_work(request).await;
        }
        let again = PollWorkParams {
            metadata: request.get_ref().metadata.clone(),
            num_free_vcores: request.get_ref().num_free_vcores,
            task_status: Vec::new(),
        };
        // Registered before the first look, so work that appears between the
        // look and the wait still wakes it.
        let work = self.work.notified();
        tokio::pin!(work);
        work.as_mut().enable();
        let first = self.inner.poll_work(request).await?;
        if !first.get_ref().tasks.is_empty() {
            return Ok(first);
        }
        if tokio::time::timeout(LONG_POLL, work).await.is_err() {
            return Ok(first);
        }
        let mut second = self.inner.poll_work(Request::new(again)).await?;
        let cleanups = first.into_inner().jobs_to_clean;
        second.get_mut().jobs_to_clean.extend(cleanups);
        Ok(second)
    }

    async fn register_executor(
        &self,
        request: Request<RegisterExecutorParams>,
    ) -> Result<Response<RegisterExecutorResult>, Status> {
        self.inner.register_executor(request).await
    }

    async fn heart_beat_from_executor(
        &self,
        request: Request<HeartBeatParams>,
    ) -> Result<Response<HeartBeatResult>, Status> {
        self.inner.heart_beat_from_executor(request).await
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusParams>,
    ) -> Result<Response<UpdateTaskStatusResult>, Status> {
        self.inner.update_task_status(request).await
    }

    async fn create_update_session(
        &self,
        request: Request<CreateUpdateSessionParams>,
    ) -> Result<Response<CreateUpdateSessionResult>, Status> {
        self.inner.create_update_session(request).await
    }

    async fn remove_session(
        &self,
        request: Request<RemoveSessionParams>,
    ) -> Result<Response<RemoveSessionResult>, Status> {
        self.inner.remove_session(request).await
    }

    type ExecuteQueryPushStream = S::ExecuteQueryPushStream;

    async fn execute_query_push(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<Self::ExecuteQueryPushStream>, Status> {
        self.inner.execute_query_push(request).await
    }

    async fn execute_query(
        &self,
        request: Request<ExecuteQueryParams>,
    ) -> Result<Response<ExecuteQueryResult>, Status> {
        self.inner.execute_query(request).await
    }

    async fn get_job_status(
        &self,
        request: Request<GetJobStatusParams>,
    ) -> Result<Response<GetJobStatusResult>, Status> {
        self.inner.get_job_status(request).await
    }

    async fn get_job_metrics(
        &self,
        request: Request<GetJobMetricsParams>,
    ) -> Result<Response<GetJobMetricsResult>, Status> {
        self.inner.get_job_metrics(request).await
    }

    async fn executor_stopped(
        &self,
        request: Request<ExecutorStoppedParams>,
    ) -> Result<Response<ExecutorStoppedResult>, Status> {
        self.inner.executor_stopped(request).await
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobParams>,
    ) -> Result<Response<CancelJobResult>, Status> {
        self.inner.cancel_job(request).await
    }

    async fn clean_job_data(
        &self,
        request: Request<CleanJobDataParams>,
    ) -> Result<Response<CleanJobDataResult>, Status> {
        self.inner.clean_job_data(request).await
    }
}

/// Wakes an executor's poll loop when dropped. Held by each task's stage
/// executor: Ballista drops it after the task's status is queued for the
/// next poll, so that poll happens at once.
#[derive(Debug)]
pub struct WakeOnDrop(pub Arc<Notify>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// Wakes the executor's poll loop every [`POLL_INTERVAL`] until aborted.
pub fn poll_ticker(poll_now: Arc<Notify>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            poll_now.notify_one();
        }
    })
}

#[cfg(test)]
mod tests {
    use ballista_core::serde::protobuf::ExecutorRegistration;

    use super::*;

    fn poll(slots: u32, free: u32) -> PollWorkParams {
        PollWorkParams {
            metadata: Some(ExecutorRegistration {
                specification: Some(ExecutorSpecification { vcores: slots }.into()),
                ..Default::default()
            }),
            num_free_vcores: free,
            task_status: Vec::new(),
        }
    }

    #[test]
    fn only_an_executor_running_no_task_waits() {
        assert!(idle(&poll(2, 2)));
        assert!(!idle(&poll(2, 1)));
        assert!(!idle(&poll(2, 0)));
        // Without a specification nothing says it is idle: answer at once.
        let unknown = PollWorkParams {
            metadata: None,
            ..poll(2, 2)
        };
        assert!(!idle(&unknown));
    }
}
