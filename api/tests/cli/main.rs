//! Integration tests of the `cairn` command line: one test binary, one module per area.
//!
//! - `common`: running the binary with a timeout, temporary stores, the spec folder.
//! - `mock`: a loopback HTTP server standing in for the public hosts the CTK calls.
//! - `ctk`: the Serverless Workflow Conformance Test Kit and smoke runs of the examples.
//! - `compensation`: the compensation extension through the binary: faults, `cancel --compensate`.
//! - `contract`: exit codes and messages of the CLI on good and bad input.
//! - `faults`: the fault test: three workers on a private PostgreSQL (`pgtmp`) under SIGKILL,
//!   SIGSTOP, database restarts and lost append replies.
//! - `input`: careless input: CloudEvents only, size limits, input stored once, read-only
//!   commands, `validate` and unknown functions, `worker --exit-when-idle`.
//! - `secrets`: the secrets canary: secrets used everywhere a definition can put one are sent,
//!   and found nowhere in the store, the logs, the CLI's or the GraphQL API's answers.
//! - `sink`: the loopback HTTP sink that the crash and fault tests' workflows call.

mod common;
mod compensation;
mod contract;
mod crash;
mod ctk;
mod faults;
mod input;
mod mock;
mod pgtmp;
mod poison;
mod secrets;
mod server;
mod sink;
