//! Starting what a session channel asked for — a login shell, a command or a subsystem —
//! as its account, on a PTY or on pipes, with the environment a login expects.

use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::{Child, Command};

use super::account::Account;

/// What the client asked the channel to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// The account's shell as a login shell.
    Shell,
    /// `shell -c COMMAND`, as OpenSSH runs commands.
    Exec(String),
    /// A subsystem (only `sftp`), run through the shell like a command.
    Subsystem(PathBuf),
}

/// A `pty-req`: the terminal type and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// The client's environment that reaches the process: TERM, LANG and LC_* only.
pub fn env_allowed(name: &str) -> bool {
    name == "TERM" || name == "LANG" || name.starts_with("LC_")
}

/// Where the sftp server lives on common distributions, if it is installed.
pub fn sftp_server() -> Option<PathBuf> {
    [
        "/usr/lib/openssh/sftp-server",
        "/usr/libexec/openssh/sftp-server",
        "/usr/lib/ssh/sftp-server",
        "/usr/libexec/sftp-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// The process's input side: a PTY (which also takes resizes) or a pipe.
pub enum Input {
    Pty(pty_process::OwnedWritePty),
    Pipe(tokio::process::ChildStdin),
}

/// One output stream and the SSH extended-data code it goes out with (None = stdout).
pub struct Output {
    pub ext: Option<u32>,
    pub reader: Reader,
    /// PTY masters report EIO once the terminal is gone; that is their end of file.
    pub is_pty: bool,
}

pub struct Process {
    pub child: Child,
    /// The process group (the child leads its own), which signals go to.
    pub group: Pid,
    pub input: Input,
    pub outputs: Vec<Output>,
}

impl Process {
    /// Sends `signal` to the whole process group, as a terminal would.
    pub fn signal_group(group: Pid, signal: Signal) {
        if let Err(error) = nix::sys::signal::killpg(group, signal) {
            tracing::debug!(%error, ?signal, "could not signal the session's processes");
        }
    }
}

/// Starts `program` as `account`.
pub fn spawn(
    account: &Account,
    program: &Program,
    pty: Option<&PtyRequest>,
    client_env: &[(String, String)],
) -> io::Result<Process> {
    let mut cmd = command(account, program, pty, client_env);
    let process = match pty {
        Some(req) => {
            let (master, pts) = pty_process::open().map_err(io::Error::other)?;
            master
                .resize(pty_process::Size::new(req.rows, req.cols))
                .map_err(io::Error::other)?;
            if account.switches_user() {
                // The terminal belongs to the login, as with sshd.
                nix::unistd::fchown(&pts, Some(account.uid), None).map_err(io::Error::from)?;
            }
            let child = pty_process::Command::from(cmd)
                .spawn(pts)
                .map_err(io::Error::other)?;
            let (read, write) = master.into_split();
            Process {
                group: child_group(&child)?,
                child,
                input: Input::Pty(write),
                outputs: vec![Output {
                    ext: None,
                    reader: Box::new(read),
                    is_pty: true,
                }],
            }
        }
        None => {
            cmd.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0);
            let mut child = cmd.spawn()?;
            let missing = || io::Error::other("child pipes missing");
            let stdin = child.stdin.take().ok_or_else(missing)?;
            let stdout = child.stdout.take().ok_or_else(missing)?;
            let stderr = child.stderr.take().ok_or_else(missing)?;
            Process {
                group: child_group(&child)?,
                child,
                input: Input::Pipe(stdin),
                outputs: vec![
                    Output {
                        ext: None,
                        reader: Box::new(stdout),
                        is_pty: false,
                    },
                    Output {
                        ext: Some(1),
                        reader: Box::new(stderr),
                        is_pty: false,
                    },
                ],
            }
        }
    };
    Ok(process)
}

fn child_group(child: &Child) -> io::Result<Pid> {
    let pid = child
        .id()
        .ok_or_else(|| io::Error::other("the child exited at once"))?;
    i32::try_from(pid)
        .map(Pid::from_raw)
        .map_err(io::Error::other)
}

fn command(
    account: &Account,
    program: &Program,
    pty: Option<&PtyRequest>,
    client_env: &[(String, String)],
) -> Command {
    let shell = &account.shell;
    let mut cmd = Command::new(shell);
    match program {
        Program::Shell => {
            // A leading dash makes it a login shell (reads the profile).
            let name = shell.file_name().map(|n| n.to_string_lossy().into_owned());
            cmd.arg0(format!("-{}", name.as_deref().unwrap_or("sh")));
        }
        Program::Exec(line) => {
            cmd.arg("-c").arg(line);
        }
        Program::Subsystem(path) => {
            cmd.arg("-c").arg(path);
        }
    }
    let home = if account.home.is_dir() {
        account.home.as_path()
    } else {
        Path::new("/")
    };
    cmd.env_clear()
        .current_dir(home)
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", shell)
        .env("PATH", account.default_path())
        .env("MAIL", format!("/var/mail/{}", account.name));
    for (name, value) in client_env.iter().filter(|(n, _)| env_allowed(n)) {
        cmd.env(name, value);
    }
    // The terminal's own type wins over a TERM sent as a variable, as with sshd.
    if let Some(req) = pty {
        cmd.env("TERM", &req.term);
    }
    prepare_child(&mut cmd, account);
    cmd
}

/// What the child does before it runs anything: put every signal back to its default action,
/// take on the account's groups and ids (when the agent switches user), then ask to be killed
/// when the agent dies.
///
/// A signal the agent's parent ignored stays ignored across fork and exec: an agent started in
/// the background by a non-interactive shell ignores SIGINT and SIGQUIT, and without the reset
/// every shell it gave would ignore ^C too. The signal mask is already cleared by std.
///
/// The parent-death signal goes last because changing ids clears it. It is sent when the
/// forking *thread* exits, which is why every session is forked on `spawner`'s thread. If
/// the agent died before the signal was set, the child sees another parent and gives up.
#[allow(unsafe_code)]
fn prepare_child(cmd: &mut Command, account: &Account) {
    let ids = account
        .switches_user()
        .then(|| (account.uid, account.gid, account.groups.clone()));
    let agent = nix::unistd::getpid();
    // SAFETY: runs in the forked child before exec, and only makes the async-signal-safe
    // system calls sigaction, setgroups, setgid, setuid, prctl and getppid on data prepared
    // in the parent (no allocation, no locks; the error is a raw OS error, which allocates
    // nothing). Groups go first: after setuid the child may not change them.
    unsafe {
        cmd.pre_exec(move || {
            for signal in Signal::iterator() {
                // SIGKILL and SIGSTOP cannot be changed and refuse; nothing else can fail.
                let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
            }
            if let Some((uid, gid, groups)) = &ids {
                nix::unistd::setgroups(groups)?;
                nix::unistd::setgid(*gid)?;
                nix::unistd::setuid(*uid)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            if nix::unistd::getppid() != agent {
                return Err(io::Error::from(nix::errno::Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// The SSH name of a signal (RFC 4254 §6.10), for `exit-signal`.
pub fn ssh_signal(signal: i32) -> russh::Sig {
    use russh::Sig;
    match Signal::try_from(signal) {
        Ok(Signal::SIGABRT) => Sig::ABRT,
        Ok(Signal::SIGALRM) => Sig::ALRM,
        Ok(Signal::SIGFPE) => Sig::FPE,
        Ok(Signal::SIGHUP) => Sig::HUP,
        Ok(Signal::SIGILL) => Sig::ILL,
        Ok(Signal::SIGINT) => Sig::INT,
        Ok(Signal::SIGKILL) => Sig::KILL,
        Ok(Signal::SIGPIPE) => Sig::PIPE,
        Ok(Signal::SIGQUIT) => Sig::QUIT,
        Ok(Signal::SIGSEGV) => Sig::SEGV,
        Ok(Signal::SIGTERM) => Sig::TERM,
        Ok(Signal::SIGUSR1) => Sig::USR1,
        Ok(other) => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
        Err(_) => Sig::Custom(signal.to_string()),
    }
}

/// The signal a client's `signal` request names, if it is one we deliver.
pub fn os_signal(sig: &russh::Sig) -> Option<Signal> {
    use russh::Sig;
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => Signal::SIGUSR2,
            "WINCH" => Signal::SIGWINCH,
            "CONT" => Signal::SIGCONT,
            "STOP" => Signal::SIGSTOP,
            "TSTP" => Signal::SIGTSTP,
            _ => return None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_terminal_and_locale_variables_pass() {
        for ok in ["TERM", "LANG", "LC_ALL", "LC_CTYPE"] {
            assert!(env_allowed(ok), "{ok}");
        }
        for bad in ["LD_PRELOAD", "PATH", "HOME", "BASH_ENV", "lc_all"] {
            assert!(!env_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn signals_map_both_ways() {
        for sig in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGKILL,
            Signal::SIGHUP,
            Signal::SIGUSR2,
        ] {
            assert_eq!(os_signal(&ssh_signal(sig as i32)), Some(sig));
        }
        assert_eq!(os_signal(&russh::Sig::Custom("NOPE".into())), None);
    }
}
