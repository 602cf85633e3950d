//! The mesh a PolicyTest describes (built by `meshward-policy`, shared with the proxy).

pub(crate) use meshward_policy::declared::build_mesh;
