//! The one thread that forks every session's program.
//!
//! A session leader asks the kernel to kill it when its parent dies (`PR_SET_PDEATHSIG`, set
//! in `process`). Linux sends that signal when the *thread* that forked the child exits, not
//! the process: a program forked on a tokio thread could be killed mid-session the day that
//! thread retires (blocking-pool threads do after 10 s idle; a worker that enters
//! `block_in_place` hands its role to a new thread). So the agent forks on a thread of its
//! own that never exits while the process lives, and the signal means exactly "the agent
//! died".

use std::io;
use std::sync::OnceLock;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> Option<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("postern-spawner".into())
                .spawn(move || {
                    // Never returns while a sender exists, and the sender is a static.
                    for job in rx {
                        job();
                    }
                })
                .map_err(|error| tracing::error!(%error, "cannot start the spawner thread"))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Runs `make` (which forks) on the spawner thread, inside the caller's tokio runtime so that
/// the child it returns is driven there.
pub async fn on_spawner<T: Send + 'static>(
    make: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let runtime = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _entered = runtime.enter();
        let _ = tx.send(make());
    });
    spawner()
        .ok_or_else(|| io::Error::other("no spawner thread"))?
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("the spawner thread dropped the request"))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn every_job_runs_on_the_same_long_lived_thread() {
        let name = || std::thread::current().name().map(str::to_owned);
        let first = super::on_spawner(move || Ok(name())).await.unwrap();
        let second = super::on_spawner(move || Ok(name())).await.unwrap();
        assert_eq!(first.as_deref(), Some("postern-spawner"));
        assert_eq!(first, second);
    }
}
