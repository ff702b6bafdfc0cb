//! Process hardening and the privilege drop. Called only from `main`, before any thread exists.
//!
//! Order and reasons (see README "Hardening walk-through"):
//! 1. `PR_SET_DUMPABLE 0`: no core dumps, and `/proc/PID/mem`, `environ` and ptrace are closed
//!    to every uid but root, the same uid included.
//! 2. `RLIMIT_CORE 0/0`: belt and braces for core files (a piped `core_pattern` ignores it,
//!    non-dumpable does not).
//! 3. Remove `LD_*` from the environment so nothing we might start inherits a preload.
//! 4. `PR_SET_NO_NEW_PRIVS`: no exec can ever gain privileges again.
//!
//! After bind and the server-info file, `--user` drops supplementary groups, gid and uid, then
//! sets non-dumpable again (a uid change resets it to `fs.suid_dumpable`) and verifies it.
//!
//! `nix` wraps every call; no `unsafe` is needed here.

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

/// Steps 1–4 above. Must run before any thread is started.
pub fn harden_process() -> Result<(), HardeningError> {
    prctl::set_dumpable(false).map_err(HardeningError::Dumpable)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(HardeningError::CoreLimit)?;
    remove_loader_variables();
    prctl::set_no_new_privs().map_err(HardeningError::NoNewPrivs)?;
    Ok(())
}

/// Removes every `LD_*` variable from the environment.
///
/// This only protects children: the loader has already applied any preload to us.
fn remove_loader_variables() {
    let names: Vec<_> = std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.as_encoded_bytes().starts_with(b"LD_"))
        .collect();
    for name in names {
        // No other thread exists yet (the documented requirement for mutating the environment).
        std::env::remove_var(name);
    }
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

/// The process's own real uid.
pub fn current_uid() -> Uid {
    nix::unistd::getuid()
}
