//! `--auth-dir`: account files in a private directory, rescanned, with rotated tokens written
//! back.
//!
//! - The directory must belong to the user the proxy runs as (after any `--user` drop) and
//!   not be accessible by group or others; so must every file (others are skipped, with the
//!   reason logged). Symlinks are not followed.
//! - Each `*.json` file (names starting with `.` are ignored) holds one account: a Codex
//!   `auth.json` or an account object. It is read with `read(2)` into locked memory, like
//!   stdin.
//! - Refreshing a file's account happens under an exclusive `flock` on `.codex-proxy.lock`
//!   in the directory — a stable file, unlike the account file that write-back replaces by
//!   rename — after re-reading the account file, so two proxies sharing the directory never
//!   both spend one single-use refresh token. The rotated tokens are written back (temporary
//!   file, 0600, then `rename`) before the lock is released.
//! - Files are never deleted or renamed away by the proxy; failure state stays in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Uid;

use crate::secret::{Credentials, IntakeBuffer};

/// The advisory lock file shared by every process that refreshes accounts in the directory.
pub const LOCK_FILE: &str = ".codex-proxy.lock";
/// The largest account file read.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// Refuses a directory (or file) that is not owned by `owner` or is open to group or others.
pub(crate) fn check_private(
    meta: &std::fs::Metadata,
    owner: Uid,
    what: &str,
) -> Result<(), String> {
    if meta.uid() != owner.as_raw() {
        return Err(format!(
            "{what} is owned by uid {}, not by uid {} that the proxy runs as",
            meta.uid(),
            owner.as_raw()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{what} is accessible by group or others (mode {:o}); chmod go= it",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Checks the directory itself (at start-up: a failure is exit code 2).
pub fn check_dir(dir: &Path, owner: Uid) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {}", e.kind()))?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    check_private(&meta, owner, "the directory")
}

/// What identifies one version of a file: replaced by rename or rewritten in place, it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileVersion {
    fn of(meta: &std::fs::Metadata) -> FileVersion {
        FileVersion {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Why a file could not be used (logged with its name; never with its contents).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}")]
    Unsafe(String),
    #[error("cannot read it: {0}")]
    Io(std::io::ErrorKind),
    #[error("{0}")]
    Credentials(#[from] crate::secret::IntakeError),
    #[error("holds more than one ChatGPT account (an auth-dir file holds one account)")]
    SeveralAccounts,
}

/// Opens `path` without following symlinks and checks it is a private regular file.
fn open_private(path: &Path, owner: Uid) -> Result<(File, FileVersion), FileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FileError::Io(e.kind()))?;
    let meta = file.metadata().map_err(|e| FileError::Io(e.kind()))?;
    if !meta.is_file() {
        return Err(FileError::Unsafe("not a regular file".into()));
    }
    check_private(&meta, owner, "the file").map_err(FileError::Unsafe)?;
    Ok((file, FileVersion::of(&meta)))
}

/// Reads and parses one account file into locked memory.
pub fn read_account_file(path: &Path, owner: Uid) -> Result<(Credentials, FileVersion), FileError> {
    let (file, version) = open_private(path, owner)?;
    let mut intake = IntakeBuffer::new(MAX_FILE_BYTES).map_err(crate::secret::IntakeError::from)?;
    intake.read_to_end(|buf| {
        nix::unistd::read(&file, buf)
            .map_err(|errno| std::io::Error::from_raw_os_error(errno as i32))
    })?;
    let credentials = intake.into_credentials()?;
    let chatgpt = credentials
        .accounts
        .iter()
        .filter(|c| matches!(c, crate::secret::Credential::Chatgpt(_)))
        .count();
    if chatgpt > 1 {
        return Err(FileError::SeveralAccounts);
    }
    Ok((credentials, version))
}

/// The `*.json` account files in the directory now (names starting with `.` are skipped).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        files.push(entry.path());
    }
    files.sort();
    Ok(files)
}

/// Takes the directory's advisory lock (blocking: call from a blocking thread).
pub fn lock(dir: &Path) -> std::io::Result<Flock<File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(LOCK_FILE))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno.into())
}

/// New token values to write into an account file.
pub struct Rotated<'a> {
    pub access_token: &'a str,
    pub refresh_token: &'a str,
    pub id_token: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub now_unix: i64,
}

/// Rewrites the account file at `path` with rotated tokens, keeping every other field, by a
/// private temporary file renamed over it. Returns the new file's version.
pub fn write_back(
    path: &Path,
    owner: Uid,
    rotated: &Rotated<'_>,
) -> Result<FileVersion, FileError> {
    let (file, _) = open_private(path, owner)?;
    let mut raw = zeroize::Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut (&file), &mut raw).map_err(|e| FileError::Io(e.kind()))?;
    let mut doc: serde_json::Value = serde_json::from_slice(&raw)
        .map_err(|_| FileError::Unsafe("no longer valid JSON".into()))?;
    let Some(object) = doc.as_object_mut() else {
        return Err(FileError::Unsafe("not a JSON object".into()));
    };
    let text = |s: &str| serde_json::Value::String(s.to_string());
    let now = text(&crate::secret::jwt::format_rfc3339(rotated.now_unix));
    if let Some(tokens) = object.get_mut("tokens").and_then(|t| t.as_object_mut()) {
        // A Codex auth.json.
        tokens.insert("access_token".into(), text(rotated.access_token));
        tokens.insert("refresh_token".into(), text(rotated.refresh_token));
        if let Some(id) = rotated.id_token {
            tokens.insert("id_token".into(), text(id));
        }
    } else {
        object.insert("access_token".into(), text(rotated.access_token));
        object.insert("refresh_token".into(), text(rotated.refresh_token));
        object.remove("rk");
        if let Some(id) = rotated.id_token {
            object.insert("id_token".into(), text(id));
        }
        if let Some(exp) = rotated.expires_at {
            object.insert(
                "expired".into(),
                text(&crate::secret::jwt::format_rfc3339(exp)),
            );
        }
    }
    object.insert("last_refresh".into(), now);
    let mut bytes = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(&doc)
            .map_err(|_| FileError::Unsafe("cannot serialise".into()))?,
    );
    bytes.push(b'\n');
    // `doc` holds token copies on the heap; dropping it frees (and wipes) them.
    drop(doc);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 8];
    let _ = getrandom::fill(&mut random);
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{name}.{suffix}.tmp"));
    let result = (|| -> std::io::Result<FileVersion> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)?;
        out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        out.write_all(&bytes)?;
        out.sync_all()?;
        let version = FileVersion::of(&out.metadata()?);
        std::fs::rename(&temp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(version)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|e| FileError::Io(e.kind()))
}

/// What the proxy knows about the directory's files: each file's last seen version and the
/// accounts (pool indices) it produced.
#[derive(Default)]
pub struct Known {
    pub files: Mutex<HashMap<PathBuf, (FileVersion, Vec<usize>)>>,
}

impl Known {
    /// Remembers that the file at `path` is now at `version` (after our own write-back, so the
    /// rescan does not reload what the proxy itself wrote).
    pub fn set_version(&self, path: &Path, version: FileVersion) {
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = files.get_mut(path) {
            entry.0 = version;
        }
    }
}

/// The account directory of `--auth-dir`.
pub struct AuthDir {
    pub dir: PathBuf,
    /// Who must own the directory and its files: the user the proxy runs as.
    pub owner: Uid,
    pub known: Known,
}

impl AuthDir {
    pub fn new(dir: PathBuf, owner: Uid) -> AuthDir {
        AuthDir {
            dir,
            owner,
            known: Known::default(),
        }
    }

    /// Brings the pool in line with the directory: new files add accounts, changed files
    /// replace their accounts' tokens (and lift a disabled state: a new login fixes it),
    /// removed files remove their accounts. Problems are logged by file name and skipped.
    pub fn rescan(&self, pool: &super::Pool) {
        let files = match list(&self.dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(error = %e.kind(), "cannot list --auth-dir");
                return;
            }
        };
        let mut known = self.known.files.lock().unwrap_or_else(|p| p.into_inner());
        for path in &files {
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                continue;
            };
            let version = FileVersion::of(&meta);
            let previous = known.get(path).cloned();
            if previous.as_ref().is_some_and(|(v, _)| *v == version) {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let loaded = read_account_file(path, self.owner);
            let (credentials, version) = match loaded {
                Ok(loaded) => loaded,
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "skipping account file");
                    // Remember this version so the same problem is not logged every scan.
                    let indices = previous.map(|(_, i)| i).unwrap_or_default();
                    known.insert(path.clone(), (version, indices));
                    continue;
                }
            };
            match previous {
                Some((_, indices))
                    if indices.len() == credentials.accounts.len() && !indices.is_empty() =>
                {
                    for (index, credential) in indices.iter().zip(&credentials.accounts) {
                        let (access, refresh, expires_at) = match credential {
                            crate::secret::Credential::ApiKey { .. } => {
                                (credential.secret_range(), None, None)
                            }
                            crate::secret::Credential::Chatgpt(c) => {
                                (c.access, c.refresh, c.expires_at)
                            }
                        };
                        let unchanged = pool.account(*index).is_some_and(|a| {
                            let token = a.token();
                            token.secret() == access.map(|r| credentials.arena.get(r))
                                && token.refresh_token()
                                    == refresh.map(|r| credentials.arena.get(r))
                        });
                        if unchanged {
                            continue;
                        }
                        if pool
                            .replace_token(
                                *index,
                                std::sync::Arc::clone(&credentials.arena),
                                access,
                                refresh,
                                expires_at,
                            )
                            .is_ok()
                        {
                            if let crate::secret::Credential::Chatgpt(c) = credential {
                                pool.set_account_id(*index, c.account_id.as_deref());
                            }
                            pool.update_status(*index, |s| {
                                s.disabled = None;
                                s.limit = None;
                            });
                            tracing::info!(
                                account = index,
                                "account file changed: new credentials loaded"
                            );
                        }
                    }
                    known.insert(path.clone(), (version, indices));
                }
                previous => {
                    // New, or its accounts changed shape: the old ones go, new ones come.
                    for index in previous.map(|(_, i)| i).unwrap_or_default() {
                        pool.remove(index);
                    }
                    match pool.add(credentials, Some(path.clone())) {
                        Ok(indices) => {
                            tracing::info!(file = %name, accounts = ?indices, "account file loaded");
                            known.insert(path.clone(), (version, indices));
                        }
                        Err(e) => {
                            tracing::error!(file = %name, error = %e, "cannot load account file")
                        }
                    }
                }
            }
        }
        let gone: Vec<PathBuf> = known
            .keys()
            .filter(|p| !files.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some((_, indices)) = known.remove(&path) {
                for index in indices {
                    pool.remove(index);
                    tracing::info!(account = index, "account file removed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempdir::Dir {
        tempdir::Dir::new()
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let mut random = [0u8; 8];
                getrandom::fill(&mut random).unwrap();
                let name: String = random.iter().map(|b| format!("{b:02x}")).collect();
                let path = std::env::temp_dir().join(format!("cp-auth-{name}"));
                std::fs::create_dir(&path).unwrap();
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o700),
                )
                .unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn write(path: &Path, mode: u32, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_directory_and_files_must_be_private() {
        let dir = private_dir();
        let me = crate::hardening::current_uid();
        assert!(check_dir(&dir.0, me).is_ok());
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_dir(&dir.0, me)
            .unwrap_err()
            .contains("group or others"));
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = Uid::from_raw(me.as_raw().wrapping_add(1));
        assert!(check_dir(&dir.0, other).unwrap_err().contains("owned by"));

        let file = dir.0.join("a.json");
        write(&file, 0o644, r#"{"refresh_token":"rt"}"#);
        assert!(matches!(
            read_account_file(&file, me),
            Err(FileError::Unsafe(_))
        ));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_account_file(&file, me).is_ok());
        let link = dir.0.join("b.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(
            read_account_file(&link, me).is_err(),
            "symlinks are not followed"
        );
        assert_eq!(list(&dir.0).unwrap(), vec![file.clone(), link]);
    }

    #[test]
    fn write_back_keeps_other_fields_and_the_file_private() {
        let dir = private_dir();
        let me = crate::hardening::current_uid();
        let file = dir.0.join("codex.json");
        write(
            &file,
            0o600,
            r#"{"auth_mode":"chatgpt","OPENAI_API_KEY":null,"tokens":{"id_token":"i","access_token":"old-a","refresh_token":"old-r","account_id":"acct"},"last_refresh":"2026-01-01T00:00:00Z"}"#,
        );
        let before = std::fs::metadata(&file).unwrap().ino();
        write_back(
            &file,
            me,
            &Rotated {
                access_token: "new-a",
                refresh_token: "new-r",
                id_token: None,
                expires_at: Some(1_795_248_000),
                now_unix: 1_795_248_000,
            },
        )
        .unwrap();
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(doc["tokens"]["access_token"], "new-a");
        assert_eq!(doc["tokens"]["refresh_token"], "new-r");
        assert_eq!(doc["tokens"]["id_token"], "i");
        assert_eq!(doc["tokens"]["account_id"], "acct");
        assert_eq!(doc["auth_mode"], "chatgpt");
        assert_eq!(doc["last_refresh"], "2026-11-21T08:00:00Z");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_ne!(meta.ino(), before, "replaced by rename");
        assert_eq!(list(&dir.0).unwrap(), vec![file], "no temporary file left");
    }
}
