//! One module per subcommand.

pub(crate) mod ca;
pub(crate) mod check;
pub(crate) mod test;
pub(crate) mod validate;
