//! One module per subcommand, mirroring the command tree.

pub mod admin;
pub mod api;
pub mod assets;
pub mod check;
pub mod completions;
pub mod discover;
pub mod events;
pub mod monitor;
pub mod prod;
pub mod serve;
