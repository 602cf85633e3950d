//! Running PolicyTests (`shared/spec/policy-tests.md`): offline, build the mesh a test
//! describes and send each case through the decision engine; `--live` ([`live`]), run the same
//! cases as real traffic through a local mesh of sidecars. Both compare with what the case
//! expects.

mod compare;
pub(crate) mod live;
mod mesh;

pub(crate) use compare::run_test;
pub(crate) use mesh::build_mesh;
