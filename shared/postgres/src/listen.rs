//! One connection per server listening on the store's channels: each
//! job's changes (`lotsawa_job`, payload the job id) and the queue's
//! (`lotsawa_queue`). A lost connection is opened again with backoff, and
//! the listener is told, since announcements made meanwhile are lost.

use std::time::Duration;

use futures::StreamExt;
use lotsawa_core::{JobId, JobStatus};
use tokio_postgres::AsyncMessage;

use crate::PgStore;
use crate::jobs::{JOB_CHANNEL, QUEUE_CHANNEL};

/// What a server does with the announcements.
pub trait Listener: Send + Sync + 'static {
    /// A job changed (on any server); with its status and run when the
    /// change said them.
    fn job(&self, id: JobId, now: Option<(JobStatus, u32)>);
    /// A job became pending or a slot was freed.
    fn queue(&self);
    /// The connection was (re)opened: anything may have changed unheard.
    fn connected(&self);
}

/// How often the listening connection asks the database something, and
/// how long it waits for the answer.
const PROBE: Duration = Duration::from_secs(10);

impl PgStore {
    /// Listen until `stop` resolves, reconnecting when the connection is
    /// lost.
    pub async fn listen(
        &self,
        listener: std::sync::Arc<dyn Listener>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut connected = false;
            let session = self.listen_once(listener.as_ref(), &mut connected);
            tokio::select! {
                result = session => {
                    if let Err(e) = result {
                        tracing::warn!(error = %e, db = %self.shown(), "listening for changes failed; reconnecting");
                    }
                }
                () = &mut stop => return,
            }
            if connected {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut stop => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(
        &self,
        listener: &dyn Listener,
        connected: &mut bool,
    ) -> Result<(), String> {
        // The connection only reads: keepalives and a periodic query find
        // a connection that died silently (a failover, a NAT timeout).
        let mut config = (*self.config).clone();
        config
            .connect_timeout(Duration::from_secs(10))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        let (client, mut connection) = config
            .connect(self.tls.clone())
            .await
            .map_err(|e| crate::db_text(&e))?;
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let sql = format!("LISTEN {JOB_CHANNEL}; LISTEN {QUEUE_CHANNEL}");
        {
            let subscribe = client.batch_execute(&sql);
            tokio::pin!(subscribe);
            // The connection is driven while the subscription runs.
            loop {
                tokio::select! {
                    r = &mut subscribe => { r.map_err(|e| crate::db_text(&e))?; break; }
                    m = messages.next() => match m {
                        Some(Ok(m)) => dispatch(listener, m),
                        Some(Err(e)) => return Err(crate::db_text(&e)),
                        None => return Err("the connection closed".into()),
                    },
                }
            }
        }
        *connected = true;
        listener.connected();
        let mut probe = tokio::time::interval(PROBE);
        probe.tick().await;
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(m) => dispatch(listener, m.map_err(|e| crate::db_text(&e))?),
                    None => return Err("the connection closed".into()),
                },
                _ = probe.tick() => {
                    // Messages keep flowing while the probe waits.
                    let query = client.simple_query("SELECT 1");
                    tokio::pin!(query);
                    let deadline = tokio::time::sleep(PROBE);
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            r = &mut query => { r.map_err(|e| crate::db_text(&e))?; break; }
                            m = messages.next() => match m {
                                Some(m) => dispatch(listener, m.map_err(|e| crate::db_text(&e))?),
                                None => return Err("the connection closed".into()),
                            },
                            () = &mut deadline => return Err("the database stopped answering".into()),
                        }
                    }
                }
            }
        }
    }
}

fn dispatch(listener: &dyn Listener, message: AsyncMessage) {
    if let AsyncMessage::Notification(n) = message {
        if n.channel() == JOB_CHANNEL {
            let mut parts = n.payload().split(' ');
            if let Some(Ok(id)) = parts.next().map(str::parse::<JobId>) {
                let now = match (parts.next(), parts.next()) {
                    (Some(status), Some(run)) => status.parse().ok().zip(run.parse().ok()),
                    _ => None,
                };
                listener.job(id, now);
            }
        } else if n.channel() == QUEUE_CHANNEL {
            listener.queue();
        }
    }
}
