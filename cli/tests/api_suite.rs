//! The shared API suite against the real `lotsawa` binary, one test per
//! case (the same list runs against the emulated cloud in
//! `tests/tests/cloud/main.rs`).

use std::process::ExitCode;

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::harness::{self, Deployment};
use lotsawa_apitests::suite::{Ctx, Target};

mod support;

struct Local {
    ctx: Ctx,
    _server: support::Server,
    _dir: tempfile::TempDir,
}

impl Deployment for Local {
    fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    fn finish(self: Box<Self>, _failed: bool) {}
}

fn main() -> ExitCode {
    harness::run(
        |rt| {
            let provider = rt.block_on(FakeProvider::start());
            let (dir, db) = support::temp_db();
            let server = support::Server::start(&db, &provider, 3, &[]);
            Local {
                ctx: Ctx {
                    api: server.api.clone(),
                    provider,
                    target: Target::Local,
                    concurrency: 3,
                },
                _server: server,
                _dir: dir,
            }
        },
        &[],
    )
}
