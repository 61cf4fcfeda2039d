//! Delivery of the domain's mail over SMTP (`lettre`), with STARTTLS required by default.

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

/// The configured mailer: SMTP when a host is set, otherwise one that sends nothing.
pub fn from_config(config: &SmtpConfig) -> anyhow::Result<std::sync::Arc<dyn Mailer>> {
    let Some(host) = config.host.as_deref() else {
        return Ok(std::sync::Arc::new(NoMailer));
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
    Ok(std::sync::Arc::new(SmtpMailer {
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
