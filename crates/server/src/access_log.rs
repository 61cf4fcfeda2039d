//! The API-access log writer: requests hand their record to a bounded queue and go on; one task seals
//! key names and writes batches. When the queue is full, requests wait for room (back-pressure) rather
//! than drop a record; when the database is down, the writer retries the same batch until it lands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use secureflows_core::access::AccessRecord;
use secureflows_core::{ApplicationId, Services, UserId, WorkspaceId};
use tokio::sync::{mpsc, oneshot};

/// How long the first record of a batch waits for company.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

enum Message {
    Record(Box<AccessRecord>),
    Flush(oneshot::Sender<()>),
    Close,
}

/// Handle to the access-log writer.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl AccessLog {
    /// Starts the writer task.
    pub fn spawn(
        services: Arc<Services>,
        capacity: usize,
        batch_size: usize,
    ) -> (AccessLog, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle = tokio::spawn(writer(services, rx, batch_size.max(1)));
        (AccessLog { tx }, handle)
    }

    /// Queues a record; waits only while the queue is full.
    pub async fn record(&self, record: AccessRecord) {
        if self.tx.send(Message::Record(Box::new(record))).await.is_err() {
            tracing::error!("the access-log writer has stopped; a record could not be queued");
        }
    }

    /// Writes what is queued and stops the writer; records sent afterwards are refused (and logged).
    pub async fn close(&self) {
        let _ = self.tx.send(Message::Close).await;
    }

    /// Waits until every record queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn writer(services: Arc<Services>, mut rx: mpsc::Receiver<Message>, batch_size: usize) {
    let mut batch: Vec<AccessRecord> = Vec::with_capacity(batch_size);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closing = false;
    while let Some(first) = rx.recv().await {
        // Let records gather briefly so that one wake-up and one transaction cover many of them.
        if matches!(first, Message::Record(_)) {
            tokio::time::sleep(BATCH_WINDOW).await;
        }
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => waiting.push(done),
                Message::Close => {
                    closing = true;
                    break;
                }
            }
            if batch.len() < batch_size {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let entries = services.seal_access_records(std::mem::take(&mut batch)).await;
            let mut delay = Duration::from_millis(100);
            loop {
                match services.stores.access.append_access(&entries).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %e, records = entries.len(), "writing the access log failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        if closing {
            rx.close();
            // Anything that raced the close is still written.
            let mut late = Vec::new();
            while let Ok(message) = rx.try_recv() {
                if let Message::Record(r) = message {
                    late.push(*r);
                }
            }
            if !late.is_empty() {
                let entries = services.seal_access_records(late).await;
                if let Err(e) = services.stores.access.append_access(&entries).await {
                    tracing::error!(error = %e, records = entries.len(), "writing the last access-log records failed");
                }
            }
            return;
        }
    }
}

/// What the handlers learn about a Session API call while serving it (who, which key), for its record.
#[derive(Debug, Clone, Default)]
pub struct AccessSlot(Arc<Mutex<SlotInfo>>);

/// The identified parts of a call.
#[derive(Debug, Clone, Default)]
pub struct SlotInfo {
    /// Workspace.
    pub workspace: Option<WorkspaceId>,
    /// Application.
    pub application: Option<ApplicationId>,
    /// User.
    pub user: Option<UserId>,
    /// Key name.
    pub key: Option<String>,
    /// Request body bytes actually read.
    pub bytes_in: Option<u64>,
    /// Set when the call is one the access log records.
    pub draft: Option<Draft>,
}

/// What is known of a Session API call when it arrives.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Method.
    pub method: String,
    /// Route template.
    pub route: String,
    /// Client address.
    pub client_ip: String,
    /// User agent.
    pub user_agent: String,
    /// Declared body length.
    pub declared_in: Option<u64>,
}

impl AccessSlot {
    /// Records who the caller is.
    pub fn identify(&self, workspace: WorkspaceId, application: ApplicationId, user: Option<UserId>) {
        if let Ok(mut s) = self.0.lock() {
            s.workspace = Some(workspace);
            s.application = Some(application);
            s.user = user;
        }
    }

    /// Records the key the call names.
    pub fn set_key(&self, key: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.key = Some(key.to_owned());
        }
    }

    /// Records the body size read.
    pub fn set_bytes_in(&self, n: u64) {
        if let Ok(mut s) = self.0.lock() {
            s.bytes_in = Some(n);
        }
    }

    /// Marks the call as one to record.
    pub fn open(&self, draft: Draft) {
        if let Ok(mut s) = self.0.lock() {
            s.draft = Some(draft);
        }
    }

    /// The finished record, if the call is one to record.
    pub fn finish(
        &self,
        status: u16,
        bytes_out: u64,
        request_id: &str,
        duration: Duration,
        at: secureflows_core::Timestamp,
    ) -> Option<AccessRecord> {
        let info = self.0.lock().map(|mut s| std::mem::take(&mut *s)).ok()?;
        let draft = info.draft?;
        Some(AccessRecord {
            workspace_id: info.workspace,
            application_id: info.application,
            user_id: info.user,
            method: draft.method,
            route: draft.route,
            key: info.key,
            status,
            bytes_in: info.bytes_in.or(draft.declared_in).unwrap_or(0),
            bytes_out,
            client_ip: draft.client_ip,
            user_agent: draft.user_agent,
            request_id: request_id.to_owned(),
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
            at,
        })
    }
}
