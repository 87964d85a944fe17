//! Where the cluster's processes are forked: one thread that lives as long as the cluster.
//! Each child asks the kernel for SIGKILL when that thread ends (PR_SET_PDEATHSIG), so a
//! harness that is killed takes etcd, the API server, the kubelet, containerd and the driver
//! with it at once, instead of leaving a kubelet that goes on starting pods (and containerd
//! shims no record knows of) until the next clean-up. The death signal belongs to the forking
//! thread, not the process: hence one thread, never a pool thread that may retire.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};

type Job = (Command, mpsc::Sender<io::Result<Child>>);

pub(crate) struct Spawner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    pub(crate) fn new() -> io::Result<Spawner> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("local-cluster-spawn".into())
            .spawn(move || {
                for (mut command, reply) in inbox {
                    let _ = reply.send(command.spawn());
                }
            })?;
        Ok(Spawner {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Spawns `command` from the spawner thread, to die with the harness.
    pub(crate) fn spawn(&self, mut command: Command) -> io::Result<Child> {
        let parent = getpid();
        // SAFETY: the closure makes only async-signal-safe system calls (prctl, getppid).
        unsafe {
            command.pre_exec(move || {
                set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died before the prctl: then no signal will come.
                if getppid() != Some(parent) {
                    return Err(io::Error::other("the harness exited"));
                }
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        let gone = || io::Error::other("the spawner thread is gone");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send((command, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        // Ends the thread's loop; its children get SIGKILL, so only drop after the tear-down.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ProcessId;
    use std::time::{Duration, Instant};

    #[test]
    fn children_die_with_the_spawner_thread() {
        let spawner = Spawner::new().expect("spawner");
        let mut sleep = Command::new("sleep");
        sleep.arg("60");
        let mut child = spawner.spawn(sleep).expect("spawn");
        let id = ProcessId::of(i32::try_from(child.id()).expect("pid")).expect("started");
        assert!(id.is_alive());
        drop(spawner);
        let deadline = Instant::now() + Duration::from_secs(5);
        while id.is_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!id.is_alive(), "the child outlived the spawner thread");
        let status = child.wait().expect("reap");
        assert!(!status.success());
    }
}
