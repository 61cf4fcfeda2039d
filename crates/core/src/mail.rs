//! Outgoing e-mail. The domain composes messages; the server delivers them over SMTP (`lettre`).

use async_trait::async_trait;

use crate::Result;

/// A plain-text message to one recipient.
#[derive(Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Body (may carry a single-use link: never log it).
    pub text: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail").finish_non_exhaustive()
    }
}

/// Delivers mail.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Whether a mail server is configured at all.
    fn enabled(&self) -> bool;
    /// Whether mail goes to the development outbox (no SMTP server, a loopback public URL) rather
    /// than to anyone's mailbox: pages then say where to read it.
    fn development_outbox(&self) -> bool {
        false
    }
    /// Sends one message; returns once the server accepted it.
    async fn send(&self, mail: Mail) -> Result<()>;
}

/// The mailer when no SMTP server is configured: sends nothing and says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMailer;

#[async_trait]
impl Mailer for NoMailer {
    fn enabled(&self) -> bool {
        false
    }

    async fn send(&self, _mail: Mail) -> Result<()> {
        Err(crate::Error::Unavailable("no mail server is configured"))
    }
}
