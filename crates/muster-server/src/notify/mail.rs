//! Sending email: the [`Mailer`] seam and its SMTP implementation over `lettre` (tokio, rustls).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use muster_probe::NetworkPolicy;
use secrecy::ExposeSecret;

use crate::config::EmailSettings;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One plain-text email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// Why an email was not sent: a sentence for the notification log, and whether sending it
/// again later may succeed (the server was unreachable, timed out or answered 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailError {
    pub message: String,
    pub transient: bool,
}

impl MailError {
    /// A failure that the same email will meet again (a refused recipient, a 5xx answer).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: false,
        }
    }

    /// A failure that may pass (no connection, a timeout, a 4xx answer).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            transient: true,
        }
    }
}

/// Sends email.
#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// Email through an SMTP server, with pooled connections.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    host: String,
    port: u16,
    outbound: Arc<NetworkPolicy>,
}

impl SmtpMailer {
    /// Reads the settings: the URL's scheme picks TLS (`smtps://`: implicit TLS; `smtp://`:
    /// plain unless `?tls=required` or `?tls=opportunistic` asks for STARTTLS), its user and
    /// password authenticate. Every connection stays inside `outbound`.
    pub fn new(settings: &EmailSettings, outbound: Arc<NetworkPolicy>) -> anyhow::Result<Self> {
        let raw = settings.smtp_url.expose_secret();
        // Errors never repeat the URL: it holds the password.
        let parsed = url::Url::parse(raw).map_err(|e| anyhow::anyhow!("MUSTER_SMTP_URL: {e}"))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("MUSTER_SMTP_URL names no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        // lettre's defaults: 465 for TLS, 587 for STARTTLS, 25 for plain SMTP.
        let starttls = parsed.query_pairs().any(|(k, _)| k == "tls");
        let port = parsed.port().unwrap_or(match parsed.scheme() {
            "smtps" => 465,
            _ if starttls => 587,
            _ => 25,
        });
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(raw)
            .map_err(|e| anyhow::anyhow!("MUSTER_SMTP_URL: {e}"))?
            .port(port)
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("MUSTER_SMTP_FROM `{}`: {e}", settings.from))?;
        if let Some(op) = &settings.operator
            && !muster_domain::notify::is_email_address(op)
        {
            anyhow::bail!("MUSTER_OPERATOR_EMAIL `{op}` is not an email address");
        }
        Ok(Self {
            transport,
            from,
            host,
            port,
            outbound,
        })
    }

    /// Refuses an SMTP server outside the outbound policy before connecting.
    async fn check_server(&self) -> Result<(), MailError> {
        let addresses: Vec<IpAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| {
                    MailError::transient(format!(
                        "cannot resolve the SMTP server {}: {e}",
                        self.host
                    ))
                })?
                .map(|a| a.ip())
                .collect(),
        };
        if addresses.is_empty() || addresses.iter().any(|ip| !self.outbound.allows(*ip)) {
            return Err(MailError::permanent(
                self.outbound
                    .refuse_name(&self.host, &addresses)
                    .to_string(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        self.check_server().await?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(email.subject.clone());
        for to in &email.to {
            let mailbox: Mailbox = to
                .parse()
                .map_err(|e| MailError::permanent(format!("bad recipient `{to}`: {e}")))?;
            builder = builder.to(mailbox);
        }
        let message = builder
            .header(ContentType::TEXT_PLAIN)
            .body(email.body.clone())
            .map_err(|e| MailError::permanent(format!("cannot build the message: {e}")))?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| {
            // 5xx answers and the client's own errors come back the same next time; no
            // connection, a timeout or a 4xx answer may pass.
            let message = format!("SMTP: {e}");
            if e.is_permanent() || e.is_client() {
                MailError::permanent(message)
            } else {
                MailError::transient(message)
            }
        })
    }
}
