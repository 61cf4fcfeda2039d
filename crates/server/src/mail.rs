//! Delivery of the domain's mail over SMTP (`lettre`), with STARTTLS required by default; or, on a
//! development machine without SMTP, into the data directory's outbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secureflows_core::mail::{Mail, Mailer, NoMailer};
use secureflows_core::{Error, Result};

use crate::config::SmtpConfig;

/// An SMTP relay.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").finish_non_exhaustive()
    }
}

/// The configured mailer: SMTP when a host is set; without one, the development outbox when the
/// instance's public URL (`issuer`) is a loopback address, and otherwise one that sends nothing (pages
/// then do not offer what needs mail).
pub fn from_config(config: &SmtpConfig, data_dir: &Path, issuer: &str) -> anyhow::Result<Arc<dyn Mailer>> {
    let Some(host) = config.host.as_deref() else {
        let local = url::Url::parse(issuer).is_ok_and(|u| secureflows_core::workspace::is_loopback(&u));
        return Ok(if local {
            Arc::new(Outbox::new(data_dir))
        } else {
            Arc::new(NoMailer)
        });
    };
    let builder = match config.tls.as_str() {
        "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        "none" => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
    };
    let mut builder = builder
        .port(config.port)
        .timeout(Some(Duration::from_secs(config.timeout_secs.max(1))));
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|_| anyhow::anyhow!("smtp.from is not a valid address"))?;
    Ok(Arc::new(SmtpMailer {
        transport: builder.build(),
        from,
    }))
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn enabled(&self) -> bool {
        true
    }

    async fn send(&self, mail: Mail) -> Result<()> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| Error::invalid("email", "the address cannot receive mail"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text)
            .map_err(|_| Error::invalid("email", "the message cannot be built"))?;
        self.transport.send(message).await.map_err(|e| {
            // Only the reply code and class: a server's reply text may echo the recipient's address.
            tracing::warn!(
                code = e.status().map(|c| c.to_string()),
                transient = e.is_transient(),
                permanent = e.is_permanent(),
                timeout = e.is_timeout(),
                "SMTP delivery failed"
            );
            Error::Unavailable("the mail server did not accept the message")
        })?;
        Ok(())
    }
}

/// The development outbox: `outbox/` in the data directory, one file per message (mode 0600, in a
/// directory of mode 0700), read with `secureflows mail list`. Used only without SMTP on a loopback
/// public URL, so a laptop can follow magic links, resets, invitations and verification mails.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// One message in the outbox.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxMessage {
    /// File name (sortable by the time written).
    pub file: String,
    /// Recipient.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Body.
    pub text: String,
}

impl Outbox {
    /// The outbox of a data directory.
    pub fn new(data_dir: &Path) -> Outbox {
        Outbox {
            dir: data_dir.join("outbox"),
        }
    }

    fn write(&self, mail: &Mail) -> anyhow::Result<String> {
        crate::app::create_private_dir(&self.dir)?;
        // UUIDv7: ordered by time, unique; the name says nothing of the recipient.
        let name = format!("{}.eml", uuid::Uuid::now_v7().simple());
        // Header values on one line each: the domain composes them, but a stray line break must not
        // start another header.
        let one_line = |v: &str| v.replace(['\r', '\n'], " ");
        let message = format!(
            "To: {}\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{}",
            one_line(&mail.to),
            one_line(&mail.subject),
            mail.text
        );
        crate::app::write_private_file(&self.dir.join(&name), message.as_bytes())?;
        Ok(name)
    }

    /// The messages, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<OutboxMessage>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".eml"))
            .collect();
        names.sort();
        let mut messages = Vec::with_capacity(names.len());
        for file in names {
            let raw = std::fs::read_to_string(self.dir.join(&file))?;
            let (head, text) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
            let header = |name: &str| {
                head.split("\r\n")
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .to_owned()
            };
            messages.push(OutboxMessage {
                to: header("To: "),
                subject: header("Subject: "),
                text: text.to_owned(),
                file,
            });
        }
        Ok(messages)
    }
}

#[async_trait]
impl Mailer for Outbox {
    fn enabled(&self) -> bool {
        true
    }

    fn development_outbox(&self) -> bool {
        true
    }

    async fn send(&self, mail: Mail) -> Result<()> {
        let outbox = self.clone();
        let written = tokio::task::spawn_blocking(move || outbox.write(&mail))
            .await
            .map_err(Error::internal)?;
        match written {
            Ok(file) => {
                // Never the address or the link: the file name only.
                tracing::info!(file = %file, "development outbox: a message was written (no SMTP server is configured; `secureflows mail list` shows it)");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "development outbox: the message could not be written");
                Err(Error::Unavailable(
                    "the message could not be written to the outbox",
                ))
            }
        }
    }
}
