//! Runs the API suite as one test per case (libtest-mimic), with a
//! deployment set up once, on the first case that runs, and torn down after
//! the last.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use crate::suite::{CASES, Ctx};

/// A deployment under test: the suite's context and whatever must live as
/// long as it (the server process, the emulation).
pub trait Deployment: Send + Sync + 'static {
    /// The context the cases use.
    fn ctx(&self) -> &Ctx;
    /// Called once after every case ran, with whether any failed.
    fn finish(self: Box<Self>, failed: bool);
}

/// A case only one deployment has.
pub type Extra<D> = (
    &'static str,
    for<'a> fn(&'a D) -> Pin<Box<dyn Future<Output = ()> + 'a>>,
);

/// The deployment once set up, or why setting it up failed.
type Shared<D> = Arc<Mutex<Option<Result<Box<D>, String>>>>;

/// Run the shared cases, then `extra`, one test each, on the deployment
/// `setup` builds (lazily: a filtered run that selects no case sets
/// nothing up).
pub fn run<D, S>(setup: S, extra: &'static [Extra<D>]) -> ExitCode
where
    D: Deployment,
    S: Fn(&tokio::runtime::Runtime) -> D + Send + Sync + 'static,
{
    let mut args = Arguments::from_args();
    // The cases share one deployment and its fake provider: one at a time,
    // in order.
    args.test_threads = Some(1);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let setup = Arc::new(setup);
    let shared: Shared<D> = Arc::new(Mutex::new(None));
    let with = {
        let (rt, setup, shared) = (rt.clone(), setup.clone(), shared.clone());
        Arc::new(move |f: &mut dyn FnMut(&D, &tokio::runtime::Runtime)| {
            let mut guard = shared.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                // A failed set-up is reported once and not tried again.
                let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| setup(&rt)));
                *guard = Some(made.map(Box::new).map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "the deployment could not be set up".to_owned())
                }));
            }
            match guard.as_ref() {
                Some(Ok(d)) => {
                    d.ctx().provider.set_delay_ms(0);
                    f(d, &rt);
                }
                Some(Err(why)) => panic!("the deployment could not be set up: {why}"),
                None => {}
            }
        })
    };
    let mut trials = Vec::new();
    for (name, case) in CASES {
        let with = with.clone();
        let case = *case;
        trials.push(Trial::test(*name, move || {
            let mut out: Result<(), Failed> = Ok(());
            with(&mut |d, rt| {
                out = rt
                    .block_on(case(d.ctx()))
                    .map_err(|e| Failed::from(format!("{e:#}")));
            });
            out
        }));
    }
    for (name, case) in extra {
        let with = with.clone();
        let case = *case;
        trials.push(Trial::test(*name, move || {
            with(&mut |d, rt| rt.block_on(case(d)));
            Ok(())
        }));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    drop(with);
    let deployment = shared.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(Ok(d)) = deployment {
        d.finish(conclusion.has_failed());
    }
    conclusion.exit_code()
}
