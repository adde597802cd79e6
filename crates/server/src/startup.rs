//! The login exchange: SCRAM-SHA-256 on every connection, and
//! SCRAM-SHA-256-PLUS (channel binding, `tls-server-end-point`) offered
//! exactly on connections that negotiated TLS, as PostgreSQL does. libpq
//! refuses a server that offers -PLUS over a plaintext connection, and a
//! client that asks for channel binding must get it over TLS: one offer
//! for all connections cannot serve both.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    protocol_negotiation, save_startup_parameters_to_metadata, AuthDriver, AuthOutcome,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{ClientInfo, ConnectionManager, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

/// Chooses the SCRAM offer by the connection's transport, then lets
/// pgwire's driver run the exchange and finish the startup.
pub struct ScramStartup {
    driver: AuthDriver<Arc<DefaultServerParameterProvider>>,
    /// SCRAM-SHA-256 only, for plaintext connections.
    plain: ScramAuth,
    /// SCRAM-SHA-256 and -PLUS bound to the server certificate (TLS on).
    bound: Option<ScramAuth>,
}

impl ScramStartup {
    /// `plain` serves plaintext logins; `bound` (configured with the
    /// server's certificate) serves TLS ones when TLS is on.
    pub fn new(
        parameters: Arc<DefaultServerParameterProvider>,
        plain: ScramAuth,
        bound: Option<ScramAuth>,
        ids: Arc<dyn PidSecretKeyGenerator>,
        connections: Arc<ConnectionManager>,
    ) -> ScramStartup {
        ScramStartup {
            driver: AuthDriver::new(parameters)
                .with_pid_secret_key_generator(ids)
                .with_connection_manager(connections),
            plain,
            bound,
        }
    }
}

#[async_trait]
impl StartupHandler for ScramStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcome = match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let scram = match (&self.bound, client.is_secure()) {
                    (Some(bound), true) => bound,
                    _ => &self.plain,
                };
                self.driver
                    .begin_authentication(client, scram.create())
                    .await?
            }
            // pgwire reads a SASL message's fields past the end of a short
            // one and panics (found by the wire fuzzer): such a message
            // ends only this login, with an error.
            PgWireFrontendMessage::PasswordMessageFamily(message) => crate::connection::guarded(
                Box::pin(self.driver.advance_authentication(client, message)),
            )
            .await
            .map_err(|()| PgWireError::InvalidScramMessage("malformed SASL message".into()))??,
            _ => return Ok(()),
        };
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { final_message, .. } => {
                self.driver
                    .complete_authentication(client, final_message)
                    .await
            }
        }
    }
}
