//! Running PolicyTests offline (`shared/spec/policy-tests.md`): build the mesh a test
//! describes, send each case through the decision engine, compare with what it expects.

mod compare;
mod mesh;

pub(crate) use compare::run_test;
pub(crate) use mesh::build_mesh;
