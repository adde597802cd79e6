//! Per-connection settings: what SET changes and SHOW reads.

use std::collections::BTreeMap;

use dpgate_config::Config;

use crate::report::Accuracy;
use dpgate_sql::constant::SERVER_VERSION;
use dpgate_sql::explain::target_text;
use dpgate_sql::{sqlstate, Ask, Mechanism, Refusal, Split, Target};

/// Settings every session starts with; clients read several of them on connect.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("server_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("intervalstyle", "postgres"),
    ("timezone", "UTC"),
    ("search_path", "\"$user\", public"),
    ("standard_conforming_strings", "on"),
    ("integer_datetimes", "on"),
    ("default_transaction_read_only", "on"),
    ("transaction_read_only", "on"),
    ("transaction_isolation", "read committed"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("max_identifier_length", "63"),
    ("is_superuser", "off"),
    ("lc_collate", "C"),
    ("lc_ctype", "C"),
    ("statement_timeout", "0"),
    ("server_version_num", "150000"),
];

/// One connection's settings.
#[derive(Debug, Clone)]
pub struct Session {
    settings: BTreeMap<String, String>,
    default_epsilon: f64,
    epsilon: f64,
    split: Split,
    mechanism: Mechanism,
    target: Option<Target>,
    accuracy: Accuracy,
}

impl Session {
    /// A session with dpgate's defaults and the config's default ε.
    pub fn new(config: &Config) -> Session {
        let mut settings: BTreeMap<String, String> = DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        settings.insert("server_version".into(), SERVER_VERSION.into());
        Session {
            settings,
            default_epsilon: config.privacy.default_epsilon,
            epsilon: config.privacy.default_epsilon,
            split: Split::default(),
            mechanism: Mechanism::default(),
            target: None,
            accuracy: Accuracy::Notice,
        }
    }

    /// What the next private query spends (`dp.epsilon`) and how it is
    /// split among its measurements (`dp.split`).
    pub fn ask(&self) -> Ask {
        Ask {
            epsilon: self.epsilon,
            split: self.split,
            mechanism: self.mechanism,
            target: self.target.clone(),
        }
    }

    /// How answers report their accuracy (`dp.accuracy`).
    pub fn accuracy(&self) -> Accuracy {
        self.accuracy
    }

    /// The search_path catalog queries resolve names with.
    pub fn search_path(&self) -> String {
        self.settings
            .get("search_path")
            .cloned()
            .unwrap_or_else(|| "\"$user\", public".into())
    }

    /// `SET name = value`; `epsilon_range` is the smallest and largest ε
    /// one query of this user may spend.
    pub fn set(
        &mut self,
        name: &str,
        value: Option<&str>,
        epsilon_range: (f64, f64),
    ) -> Result<(), Refusal> {
        match name {
            "dp.epsilon" => {
                let Some(v) = value else {
                    self.epsilon = self.default_epsilon;
                    return Ok(());
                };
                let eps: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| bad_epsilon(v, epsilon_range))?;
                if !(eps.is_finite() && eps >= epsilon_range.0 && eps <= epsilon_range.1) {
                    return Err(bad_epsilon(v, epsilon_range));
                }
                self.epsilon = eps;
                Ok(())
            }
            "dp.split" => {
                self.split = match value {
                    None => Split::default(),
                    Some(v) => Split::parse(v)?,
                };
                Ok(())
            }
            "dp.target_error" => {
                self.target = match value.map(str::trim) {
                    None | Some("") => None,
                    Some(v) if v.eq_ignore_ascii_case("off") => None,
                    Some(v) => Some(Target::parse(v)?),
                };
                Ok(())
            }
            "dp.mechanism" => {
                self.mechanism = match value {
                    None => Mechanism::default(),
                    Some(v) => Mechanism::parse(v)?,
                };
                Ok(())
            }
            "dp.accuracy" => {
                self.accuracy = match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
                    None | Some("notice") => Accuracy::Notice,
                    Some("columns") => Accuracy::Columns,
                    Some(other) => {
                        return Err(Refusal::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("dp.accuracy must be 'notice' or 'columns', got '{other}'"),
                            "SET dp.accuracy = 'columns' adds a <column>_ci half-width after each noisy column; 'notice' reports in a NOTICE only",
                        ))
                    }
                };
                Ok(())
            }
            n if n.starts_with("dp.") => Err(unknown(n)),
            n => {
                match value {
                    Some(v) => self.settings.insert(n.to_string(), v.to_string()),
                    None => self.settings.remove(n),
                };
                Ok(())
            }
        }
    }

    /// `RESET name`, or everything for `None`.
    pub fn reset(&mut self, name: Option<&str>, config: &Config) {
        match name {
            None => *self = Session::new(config),
            Some("dp.epsilon") => self.epsilon = self.default_epsilon,
            Some("dp.split") => self.split = Split::default(),
            Some("dp.mechanism") => self.mechanism = Mechanism::default(),
            Some("dp.target_error") => self.target = None,
            Some("dp.accuracy") => self.accuracy = Accuracy::Notice,
            Some(n) => {
                let fresh = Session::new(config);
                match fresh.settings.get(n) {
                    Some(v) => self.settings.insert(n.to_string(), v.clone()),
                    None => self.settings.remove(n),
                };
            }
        }
    }

    /// The value `SHOW name` reports (dp.budget is answered by the caller).
    pub fn show(&self, name: &str) -> Result<String, Refusal> {
        match name {
            "dp.epsilon" => return Ok(self.epsilon.to_string()),
            "dp.split" => return Ok(self.split.name().into()),
            "dp.mechanism" => return Ok(self.mechanism.name().into()),
            "dp.target_error" => return Ok(self.target_setting()),
            "dp.accuracy" => return Ok(self.accuracy_text().into()),
            _ => {}
        }
        self.settings
            .get(name)
            .cloned()
            .ok_or_else(|| unknown(name))
    }

    /// Every setting, for `SHOW ALL`.
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self.settings.clone().into_iter().collect();
        all.push(("dp.epsilon".into(), self.epsilon.to_string()));
        all.push(("dp.split".into(), self.split.name().into()));
        all.push(("dp.mechanism".into(), self.mechanism.name().into()));
        all.push(("dp.target_error".into(), self.target_setting()));
        all.push(("dp.accuracy".into(), self.accuracy_text().into()));
        all
    }

    fn target_setting(&self) -> String {
        self.target.as_ref().map_or("off".into(), target_text)
    }

    fn accuracy_text(&self) -> &'static str {
        match self.accuracy {
            Accuracy::Notice => "notice",
            Accuracy::Columns => "columns",
        }
    }
}

fn bad_epsilon(v: &str, (min, max): (f64, f64)) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("dp.epsilon must be a number from {min} to {max}, got {v}"),
        format!("SET dp.epsilon to a value in [{min}, {max}], e.g. 0.1"),
    )
}

fn unknown(name: &str) -> Refusal {
    Refusal::new(
        sqlstate::UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
        "dpgate's own settings are dp.epsilon, dp.target_error, dp.split, dp.mechanism and dp.accuracy (SET/SHOW) and dp.budget (SHOW)",
    )
}
