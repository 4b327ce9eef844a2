//! The benchmark scenarios, one module each. Every module's `run` measures
//! its part once and adds its figures under the names the report has
//! always used; `main` decides which parts run, in which order, and how
//! many times.

pub(crate) mod drain;
pub(crate) mod enqueue;
pub(crate) mod fanout;
pub(crate) mod http;
pub(crate) mod load;
pub(crate) mod nodes;
pub(crate) mod pickup;
pub(crate) mod provider;
pub(crate) mod scale;
pub(crate) mod text;
pub(crate) mod transliterate;
