//! Process hardening and the privilege drop. Called only from `main`, before any thread exists.
//!
//! Order and reasons (see README "Hardening walk-through"):
//! 1. `PR_SET_DUMPABLE 0`: no core dumps, and `/proc/PID/mem`, `environ` and ptrace are closed
//!    to every uid but root, the same uid included.
//! 2. `RLIMIT_CORE 0/0`: belt and braces for core files (a piped `core_pattern` ignores it,
//!    non-dumpable does not).
//! 3. Wipe the environment: every value in the initial environment block is overwritten in
//!    place (so `/proc/PID/environ` no longer shows, say, an `OPENAI_API_KEY` a careless
//!    launcher left there), then every variable is removed (`LD_*` included, so nothing we
//!    might start inherits a preload). The only value the proxy uses, `SUDO_UID`, is read
//!    first and returned.
//! 4. `PR_SET_NO_NEW_PRIVS`: no exec can ever gain privileges again.
//!
//! After bind and the server-info file, `--user` drops supplementary groups, gid and uid, then
//! sets non-dumpable again (a uid change resets it to `fs.suid_dumpable`) and verifies it.
//!
//! This module and `secret` are the only places where `unsafe` is allowed (here: walking the
//! C `environ` block to wipe it).
#![allow(unsafe_code)]

use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{Gid, Uid};

/// A hardening step that failed. Always fatal: exit 5 before serving, 6 for the drop.
#[derive(Debug, thiserror::Error)]
pub enum HardeningError {
    #[error("cannot make the process non-dumpable: {0}")]
    Dumpable(nix::Error),
    #[error("cannot disable core dumps: {0}")]
    CoreLimit(nix::Error),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("cannot drop supplementary groups: {0}")]
    SetGroups(nix::Error),
    #[error("cannot change group id: {0}")]
    SetGid(nix::Error),
    #[error("cannot change user id: {0}")]
    SetUid(nix::Error),
    #[error("privilege drop did not take effect ({0})")]
    NotDropped(&'static str),
    #[error("process is dumpable again after the privilege drop")]
    DumpableAfterDrop,
}

/// What start-up keeps from the environment before wiping it.
pub struct KeptEnvironment {
    /// `SUDO_UID`, the default of `--info-owner`.
    pub sudo_uid: Option<String>,
}

/// Steps 1–4 above. Must run before any thread is started.
pub fn harden_process() -> Result<KeptEnvironment, HardeningError> {
    prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardeningError::CoreLimit)?;
    let kept = KeptEnvironment {
        sudo_uid: std::env::var("SUDO_UID").ok(),
    };
    wipe_environment();
    prctl::set_no_new_privs().map_err(HardeningError::NoNewPrivs)?;
    Ok(kept)
}

extern "C" {
    /// The C library's environment block (`environ(7)`).
    static mut environ: *mut *mut libc::c_char;
}

/// Overwrites every value in the environment block with zeroes, then removes every variable.
fn wipe_environment() {
    // SAFETY: no other thread exists yet, so nothing reads or changes the environment
    // concurrently. `environ` is a NULL-terminated array of pointers to NUL-terminated
    // `NAME=value` strings owned by the process (the initial stack, or libc's heap copies);
    // only the bytes after `=` and before the NUL are overwritten, so every string stays
    // terminated and the array itself is untouched.
    unsafe {
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            let text = *entry;
            let len = libc::strlen(text);
            let eq = libc::memchr(text.cast(), i32::from(b'='), len).cast::<libc::c_char>();
            if !eq.is_null() {
                let value = eq.add(1);
                let value_len = len - (value.offset_from(text) as usize);
                std::ptr::write_bytes(value, 0, value_len);
                std::hint::black_box(value);
            }
            entry = entry.add(1);
        }
    }
    let names: Vec<_> = std::env::vars_os().map(|(name, _)| name).collect();
    for name in names {
        // No other thread exists yet (the documented requirement for mutating the environment).
        std::env::remove_var(name);
    }
}

/// Blocks SIGTERM and SIGINT on this thread (and every thread started from it later), so a
/// stop request that arrives before the handlers exist waits instead of killing the process
/// with its server-info file left behind. Call before the server-info file is written.
pub fn hold_termination_signals() -> Result<(), nix::Error> {
    termination_signals().thread_block()
}

/// Lets held SIGTERM/SIGINT through on this thread once their handlers are installed; a
/// signal that arrived meanwhile is delivered now.
pub fn release_termination_signals() -> Result<(), nix::Error> {
    termination_signals().thread_unblock()
}

fn termination_signals() -> nix::sys::signal::SigSet {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGTERM);
    set.add(nix::sys::signal::Signal::SIGINT);
    set
}

/// Whether the kernel currently considers this process dumpable.
pub fn is_dumpable() -> bool {
    prctl::get_dumpable().unwrap_or(true)
}

/// Points fd 0 at `/dev/null` once the credentials have been read, so nothing can read or
/// block on the pipe again.
pub fn detach_stdin() {
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }
}

/// The account to drop to.
#[derive(Debug, Clone)]
pub struct DropTarget {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Drops supplementary groups, gid and uid (real, effective and saved), then re-asserts and
/// verifies non-dumpable. Must run before any thread is started.
pub fn drop_privileges(target: &DropTarget) -> Result<(), HardeningError> {
    nix::unistd::setgroups(&[]).map_err(HardeningError::SetGroups)?;
    nix::unistd::setresgid(target.gid, target.gid, target.gid).map_err(HardeningError::SetGid)?;
    nix::unistd::setresuid(target.uid, target.uid, target.uid).map_err(HardeningError::SetUid)?;

    let uids = nix::unistd::getresuid().map_err(HardeningError::SetUid)?;
    if uids.real != target.uid || uids.effective != target.uid || uids.saved != target.uid {
        return Err(HardeningError::NotDropped(
            "user ids differ from the target",
        ));
    }
    let gids = nix::unistd::getresgid().map_err(HardeningError::SetGid)?;
    if gids.real != target.gid || gids.effective != target.gid || gids.saved != target.gid {
        return Err(HardeningError::NotDropped(
            "group ids differ from the target",
        ));
    }
    if !target.uid.is_root() && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(HardeningError::NotDropped("setuid(0) still succeeds"));
    }

    // A uid change resets dumpable to fs.suid_dumpable: set it again and check.
    prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    if is_dumpable() {
        return Err(HardeningError::DumpableAfterDrop);
    }
    Ok(())
}

/// True when this process may change its user and group ids (`--user`): it runs as root, or
/// holds both CAP_SETUID and CAP_SETGID in its effective set (read from /proc/self/status).
pub fn may_change_ids() -> bool {
    const CAP_SETGID: u64 = 1 << 6;
    const CAP_SETUID: u64 = 1 << 7;
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & CAP_SETUID != 0 && caps & CAP_SETGID != 0)
}

/// The process's own real uid.
pub fn current_uid() -> Uid {
    nix::unistd::getuid()
}
