//! Cairn's server and command line as a library: what the `cairn` binary is made of, for
//! programs that start a server in process (the benchmarks in `tests/bench`, an application
//! embedding the API) or run the command line itself.
//!
//! - [`server::Server`]: the GraphQL API over a runtime, built from [`options::ServerOptions`]
//!   (`Server::build(options).await?.run(shutdown).await`), as `cairn serve` runs it.
//! - [`options`]: the settings shared by commands, and the server's.
//! - [`cli`]: the `cairn` command line itself.

pub mod cli;
mod definitions_cli;
mod failure;
pub mod options;
mod projections;
mod replay;
mod secrets;
pub mod server;
