//! The server-info file: one JSON line telling clients where the proxy listens.
//!
//! Written after bind and before any privilege drop, atomically: an exclusive, no-follow
//! temp file with a random name in the same directory, then `rename` over the destination.
//! A symlink planted at the destination is replaced, its target never opened; a stale file
//! from an earlier run is replaced. Mode 0644, or 0600 and owned by the info owner when it
//! holds the client token. Removed on exit only if the path still names the file written.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;
use serde::Serialize;

/// The file's contents (README.md, "Server-info file and `/health`").
#[derive(Serialize)]
pub struct ServerInfo<'a> {
    pub port: u16,
    pub pid: u32,
    pub version: &'static str,
    pub base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
}

/// Writing the server-info file failed (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("cannot write server-info file {path}: {reason}")]
pub struct InfoError {
    pub path: PathBuf,
    pub reason: String,
}

/// A written server-info file, identified by device, inode and inode change time (inode
/// numbers are reused as soon as a file is deleted, so they alone do not identify it).
#[derive(Debug)]
pub struct WrittenInfo {
    path: PathBuf,
    identity: (u64, u64, i64, i64),
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64, i64, i64) {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

/// Writes `info` to `path` atomically. With a token the file is 0600 and owned by `owner`.
pub fn write(path: &Path, info: &ServerInfo<'_>, owner: Uid) -> Result<WrittenInfo, InfoError> {
    let fail = |reason: String| InfoError {
        path: path.to_path_buf(),
        reason,
    };
    let mut line = serde_json::to_vec(info).map_err(|e| fail(e.to_string()))?;
    line.push(b'\n');
    let holds_token = info.token.is_some();
    let mode = if holds_token { 0o600 } else { 0o644 };

    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("not a file path".to_string()))?
        .to_string_lossy()
        .into_owned();
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| fail(e.to_string()))?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let temp = dir.join(format!(".{name}.{suffix}.tmp"));

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(|e| fail(format!("create {}: {e}", temp.display())))?;
    let result = (|| {
        if holds_token {
            std::os::unix::fs::fchown(&file, Some(owner.as_raw()), None)
                .map_err(|e| format!("chown: {e}"))?;
        }
        // The umask may have narrowed the mode; set it exactly.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod: {e}"))?;
        file.write_all(&line).map_err(|e| format!("write: {e}"))?;
        file.sync_all().map_err(|e| format!("sync: {e}"))?;
        std::fs::rename(&temp, path).map_err(|e| format!("rename: {e}"))?;
        // After the rename: a rename changes the inode's change time on some filesystems.
        let meta = file.metadata().map_err(|e| format!("stat: {e}"))?;
        Ok::<_, String>(identity(&meta))
    })();
    match result {
        Ok(identity) => Ok(WrittenInfo {
            path: path.to_path_buf(),
            identity,
        }),
        Err(reason) => {
            let _ = std::fs::remove_file(&temp);
            Err(fail(reason))
        }
    }
}

impl WrittenInfo {
    /// Removes the file if the path still names it (not a file someone put there since).
    /// `Err` when the path still names our file and it could not be removed (after a `--user`
    /// drop the directory is often not writable); the caller logs it.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if identity(&meta) == self.identity => std::fs::remove_file(&self.path),
            _ => {
                tracing::debug!("server-info path no longer names our file; left alone");
                Ok(())
            }
        }
    }

    /// Where the file was written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn info(token: Option<&str>) -> ServerInfo<'_> {
        ServerInfo {
            port: 1234,
            pid: 42,
            version: "0.1.0",
            base_url: "http://127.0.0.1:1234/v1".into(),
            token,
        }
    }

    fn tempdir() -> PathBuf {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!("cp-info-{}", u64::from_ne_bytes(random)));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_one_json_line_with_mode_0644() {
        let dir = tempdir();
        let path = dir.join("info.json");
        let written = write(&path, &info(None), nix::unistd::getuid()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"port\":1234,\"pid\":42,\"version\":\"0.1.0\",\"base_url\":\"http://127.0.0.1:1234/v1\"}\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        written.remove().unwrap();
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "no temp file left behind"
        );
    }

    #[test]
    fn token_file_is_0600() {
        let dir = tempdir();
        let path = dir.join("info.json");
        write(&path, &info(Some("abc")), nix::unistd::getuid()).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("\"token\":\"abc\""));
    }

    #[test]
    fn planted_symlink_is_replaced_and_its_target_untouched() {
        let dir = tempdir();
        let target = dir.join("victim");
        std::fs::write(&target, b"precious").unwrap();
        let path = dir.join("info.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write(&path, &info(None), nix::unistd::getuid()).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn stale_file_is_replaced_and_a_foreign_file_is_not_removed() {
        let dir = tempdir();
        let path = dir.join("info.json");
        std::fs::write(&path, b"stale").unwrap();
        let written = write(&path, &info(None), nix::unistd::getuid()).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("{\"port\":1234"));
        std::fs::remove_file(&path).unwrap();
        // (The new file may well get the freed inode number back.)
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&path, b"someone else's").unwrap();
        written.remove().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    }
}
