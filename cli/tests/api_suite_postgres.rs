//! The shared API suite against a `lotsawa serve` node on PostgreSQL (a
//! throwaway server this test starts, one database), one test per case.

use std::path::Path;
use std::process::ExitCode;

use lotsawa_apitests::FakeProvider;
use lotsawa_apitests::harness::{self, Deployment};
use lotsawa_apitests::suite::{Ctx, Target};
use lotsawa_conformance::postgres::Cluster;

mod support;

struct Node {
    ctx: Ctx,
    _server: support::Server,
}

impl Deployment for Node {
    fn ctx(&self) -> &Ctx {
        &self.ctx
    }
    fn finish(self: Box<Self>, _failed: bool) {}
}

fn main() -> ExitCode {
    harness::run(
        |rt| {
            let provider = rt.block_on(FakeProvider::start());
            let db = Cluster::get().fresh_database();
            let server = support::Server::start(Path::new(&db), &provider, 3, &[]);
            Node {
                ctx: Ctx {
                    api: server.api.clone(),
                    provider,
                    target: Target::Local,
                    concurrency: 3,
                },
                _server: server,
            }
        },
        &[],
    )
}
