//! Named prepared statements and portals per connection, capped: pgwire
//! keeps every one a client creates until the client closes it, so
//! without a cap one connection could hold any amount of memory
//! (100 000 statements took 150 MB).

use std::collections::HashSet;

use pgwire::error::ErrorInfo;
use pgwire::messages::extendedquery::{TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::PgWireFrontendMessage;

/// The names a connection holds (unnamed ones replace each other).
pub(crate) struct NamedObjects {
    statements: HashSet<String>,
    portals: HashSet<String>,
    cap: usize,
}

impl NamedObjects {
    /// At most `cap` named statements and `cap` named portals.
    pub fn new(cap: usize) -> NamedObjects {
        NamedObjects {
            statements: HashSet::new(),
            portals: HashSet::new(),
            cap,
        }
    }

    /// Follows `message`; refuses (53400) a Parse or Bind that would hold
    /// more than the cap, before pgwire stores anything.
    pub fn admit(&mut self, message: &PgWireFrontendMessage) -> Result<(), Box<ErrorInfo>> {
        let (set, name, what) = match message {
            PgWireFrontendMessage::Parse(p) => {
                (&mut self.statements, &p.name, "prepared statements")
            }
            PgWireFrontendMessage::Bind(b) => (&mut self.portals, &b.portal_name, "portals"),
            PgWireFrontendMessage::Close(c) => {
                let set = match c.target_type {
                    TARGET_TYPE_BYTE_STATEMENT => &mut self.statements,
                    TARGET_TYPE_BYTE_PORTAL => &mut self.portals,
                    _ => return Ok(()),
                };
                if let Some(name) = &c.name {
                    set.remove(name);
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let Some(name) = name.as_ref().filter(|n| !n.is_empty()) else {
            return Ok(());
        };
        if set.contains(name) {
            return Ok(());
        }
        if set.len() >= self.cap {
            let mut info = ErrorInfo::new(
                "ERROR".into(),
                "53400".into(),
                format!(
                    "this connection already holds {} named {what}, the most server.max_prepared_per_connection allows",
                    self.cap
                ),
            );
            info.hint = Some(format!(
                "close {what} you no longer need (Close, or the driver's statement cache size), or use unnamed ones"
            ));
            return Err(Box::new(info));
        }
        set.insert(name.clone());
        Ok(())
    }
}
