//! One module per subcommand, mirroring the command tree.

pub mod admin;
pub mod serve;
