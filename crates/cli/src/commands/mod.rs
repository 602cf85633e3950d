//! One module per subcommand.

pub(crate) mod analyze;
pub(crate) mod apply;
pub(crate) mod ca;
pub(crate) mod check;
pub(crate) mod config_source;
pub(crate) mod control_api;
pub(crate) mod control_plane;
pub(crate) mod describe;
pub(crate) mod down;
pub(crate) mod edges;
pub(crate) mod exec;
pub(crate) mod get;
pub(crate) mod internal;
pub(crate) mod live_client;
pub(crate) mod logs;
pub(crate) mod pods;
pub(crate) mod proxy_config;
pub(crate) mod proxy_status;
pub(crate) mod run;
pub(crate) mod saved;
pub(crate) mod test;
pub(crate) mod up;
pub(crate) mod validate;
