//! The secureFlows HTTP server as a library: configuration, state, problem mapping, extractors,
//! middleware, the routers, and start-up. Only this crate knows HTTP.

// `Problem` (136 bytes) is the error of every extractor and handler; it lives only on error paths.
#![allow(clippy::result_large_err)]

pub mod access_log;
pub mod api;
pub mod app;
pub mod breached;
pub mod budget;
pub mod config;
pub mod console;
pub mod coord;
pub mod extract;
pub mod failure;
pub mod hosted;
pub mod http_client;
pub mod mail;
pub mod middleware;
pub mod pages;
pub mod problem;
pub mod request;
pub mod routes;
pub mod state;
pub mod sweeper;
pub mod throttle;
pub mod upstream;

pub use app::{Access, Opened, RawStore, Server};
pub use config::Config;
