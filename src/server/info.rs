//! The server-info file: one JSON line telling clients where the proxy listens.
//!
//! Written after bind and before any privilege drop, atomically. The parent directory is
//! opened component by component from `/` (or the working directory) with `O_NOFOLLOW`, and
//! a path with a symbolic link in any directory component is refused: the proxy often runs
//! as root and writes into a client's home, where the client could otherwise point
//! `~/.config` at `/etc`. Everything after that is relative to the directory handle kept
//! open for the process's life: an exclusive, no-follow temp file with a random name
//! (`openat`), `fchown`, `fsync`, then `renameat` over the destination, and on exit
//! `unlinkat`. A symlink planted at the destination itself is replaced, its target never
//! opened; a stale file from an earlier run is replaced. Mode 0644, or 0600 and owned by the
//! info owner when it holds the client token. Removed on exit only if the name still points
//! at the file written.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, Uid, UnlinkatFlags};
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

/// A written server-info file: the directory handle it was written through, its name
/// there, and its identity (device, inode and inode change time: inode numbers are reused as
/// soon as a file is deleted, so they alone do not identify it).
#[derive(Debug)]
pub struct WrittenInfo {
    path: PathBuf,
    dir: OwnedFd,
    name: OsString,
    identity: (u64, u64, i64, i64),
}

fn identity(stat: &FileStat) -> (u64, u64, i64, i64) {
    (stat.st_dev, stat.st_ino, stat.st_ctime, stat.st_ctime_nsec)
}

/// Opens `dir` as an `O_PATH` handle without following a symbolic link in any component.
/// A relative path starts at the working directory; `..` is resolved by the kernel against
/// the directory already opened (no link is involved).
pub(crate) fn open_dir_nofollow(dir: &Path) -> Result<OwnedFd, String> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let start: &OsStr = if dir.is_absolute() {
        OsStr::new("/")
    } else {
        OsStr::new(".")
    };
    let mut current = openat(AT_FDCWD, start, flags, Mode::empty())
        .map_err(|e| format!("open {}: {e}", Path::new(start).display()))?;
    let mut walked = PathBuf::from(start);
    for component in dir.components() {
        let name = match component {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(name) => name,
        };
        walked.push(name);
        // O_PATH|O_NOFOLLOW opens a symlink itself rather than its target, so the type
        // check below sees the link and nothing it points at is ever opened.
        let next = openat(
            &current,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", walked.display()))?;
        let kind = fstat(&next)
            .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
            .map_err(|e| format!("stat {}: {e}", walked.display()))?;
        if kind == SFlag::S_IFLNK {
            return Err(format!(
                "{} is a symbolic link; links in the directories of the path are not followed \
                 (another user could point them anywhere): give the real path",
                walked.display()
            ));
        }
        if kind != SFlag::S_IFDIR {
            return Err(format!("{} is not a directory", walked.display()));
        }
        current = next;
    }
    Ok(current)
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

    let parent = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| fail("not a file path".to_string()))?
        .to_os_string();
    let dir = open_dir_nofollow(parent).map_err(fail)?;
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| fail(e.to_string()))?;
    let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut temp = OsString::from(".");
    temp.push(&name);
    temp.push(format!(".{suffix}.tmp"));

    let fd = openat(
        &dir,
        temp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
    .map_err(|e| fail(format!("create {}: {e}", Path::new(&temp).display())))?;
    let mut file = std::fs::File::from(fd);
    let result = (|| {
        if holds_token {
            nix::unistd::fchown(&file, Some(owner), None).map_err(|e| format!("chown: {e}"))?;
        }
        // The umask may have narrowed the mode; set it exactly.
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))
            .map_err(|e| format!("chmod: {e}"))?;
        file.write_all(&line).map_err(|e| format!("write: {e}"))?;
        file.sync_all().map_err(|e| format!("sync: {e}"))?;
        renameat(&dir, temp.as_os_str(), &dir, name.as_os_str())
            .map_err(|e| format!("rename: {e}"))?;
        // After the rename: a rename changes the inode's change time on some filesystems.
        let stat = fstat(&file).map_err(|e| format!("stat: {e}"))?;
        Ok::<_, String>(identity(&stat))
    })();
    match result {
        Ok(identity) => Ok(WrittenInfo {
            path: path.to_path_buf(),
            dir,
            name,
            identity,
        }),
        Err(reason) => {
            let _ = unlinkat(&dir, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            Err(fail(reason))
        }
    }
}

impl WrittenInfo {
    /// Removes the file if its name in the directory written to still points at it (not a
    /// file someone put there since), through the directory handle kept since the write.
    /// `Err` when the name still points at our file and it could not be removed (after a
    /// `--user` drop the directory is often not writable); the caller logs it.
    pub fn remove(&self) -> std::io::Result<()> {
        match fstatat(
            &self.dir,
            self.name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) if identity(&stat) == self.identity => {
                unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                    .map_err(std::io::Error::from)
            }
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
    fn a_symlinked_directory_in_the_path_is_refused_and_its_target_untouched() {
        let dir = tempdir();
        let victim = dir.join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("info.json"), b"precious").unwrap();
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::symlink(&victim, home.join(".config")).unwrap();
        let path = home.join(".config").join("info.json");
        let err = write(&path, &info(None), nix::unistd::getuid()).unwrap_err();
        assert!(err.reason.contains("symbolic link"), "{}", err.reason);
        assert!(
            err.reason
                .contains(&home.join(".config").display().to_string()),
            "names the link: {}",
            err.reason
        );
        assert_eq!(
            std::fs::read(victim.join("info.json")).unwrap(),
            b"precious"
        );
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            1,
            "no temp file"
        );
        // A link further up the path is refused the same way.
        std::os::unix::fs::symlink(&home, dir.join("home-link")).unwrap();
        let err = write(
            &dir.join("home-link").join("info.json"),
            &info(None),
            nix::unistd::getuid(),
        )
        .unwrap_err();
        assert!(err.reason.contains("symbolic link"), "{}", err.reason);
        // A regular file used as a directory is named too.
        std::fs::write(dir.join("plain"), b"x").unwrap();
        let err = write(
            &dir.join("plain").join("info.json"),
            &info(None),
            nix::unistd::getuid(),
        )
        .unwrap_err();
        assert!(err.reason.contains("not a directory"), "{}", err.reason);
    }

    #[test]
    fn dot_dot_components_are_walked_without_links() {
        let dir = tempdir();
        std::fs::create_dir(dir.join("a")).unwrap();
        let path = dir.join("a").join("..").join("info.json");
        let written = write(&path, &info(None), nix::unistd::getuid()).unwrap();
        assert!(dir.join("info.json").exists());
        written.remove().unwrap();
        assert!(!dir.join("info.json").exists());
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
