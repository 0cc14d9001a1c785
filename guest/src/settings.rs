//! The operator's settings: one typed record handed over by the host
//! (`wit/settings.wit`), asked for once per instance. Everything that
//! depends on a setting takes the record as a parameter, so tests pass
//! their own and nothing re-reads it.

use std::sync::OnceLock;

pub use crate::bindings::blockreg::registry::settings::Settings;

/// The settings in force for this instance.
pub fn current() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(crate::bindings::blockreg::registry::settings::get_settings)
}
