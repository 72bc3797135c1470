//! The operator's controllers, one module per kind (`operon create controller` adds them),
//! registered with the runtime's Manager: their caches fill at once, and they reconcile when
//! this replica leads.

use operon_manifests::Rule;
use operon_runtime::manager::Manager;

// operon:scaffold:controller-modules (`operon create controller` adds a line above)

/// What every controller gets besides the Manager (which owns the client, the namespaces
/// served, metrics, readiness and leadership).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles running at once, per controller (one at a time per object).
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { concurrency: 10 }
    }
}

/// The API calls every controller makes: the operator's RBAC (config/rbac/role.yaml).
pub fn rules() -> Vec<Rule> {
    let all: &[Vec<Rule>] = &[
        // operon:scaffold:rules
    ];
    all.concat()
}

/// Kinds of the objects the controllers create, `(kind, version)`.
pub fn owned_kinds() -> Vec<(&'static str, &'static str)> {
    let all: &[Vec<(&'static str, &'static str)>] = &[
        // operon:scaffold:owned-kinds
    ];
    all.concat()
}

/// Registers every controller with `manager`.
pub fn register(manager: &mut Manager, settings: &Settings) {
    let _ = (&manager, settings);
    // operon:scaffold:controllers
}
