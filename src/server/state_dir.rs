//! `--state-dir DIR`: usage counters and budget windows kept across restarts.
//!
//! The directory is checked at start-up (a problem is exit code 2, before anything is bound):
//! it is opened component by component without following a symbolic link (the walk the
//! server-info file uses, [`super::info::open_dir_nofollow`]), must belong to the user the
//! proxy runs as after any `--user` drop, and must be closed to group and others. The handle
//! is kept for the process's life, so every later step is relative to the directory that was
//! checked, never to its path again.
//!
//! One file, [`STATE_FILE`], holds a versioned JSON [`Snapshot`] (docs/usage.md, "State
//! file"): per (uid, provider, model, account index) the request and token counters, and per
//! budgeted caller the window start and the tokens spent in it. No secret, email or account
//! id: the same values the metric labels carry. It is read once at start; a file that cannot
//! be read or parsed, has another version, or is not a private regular file is a start-up
//! error naming the problem, never a silent reset. It is written by [`save`]: an exclusive,
//! no-follow temp file with a random name in the directory, `fsync`, `renameat` over the
//! state file, `fsync` of the directory, so a crash leaves the old file or the new one, never
//! half of one. [`run_saver`] writes at most [`SAVE_INTERVAL`] after a change, and once more
//! at shutdown, after the drain (requests in flight are counted when their body ends).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{unlinkat, Uid, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::policy::Policies;
use super::usage::Accounting;

/// The state file's name in the directory.
pub const STATE_FILE: &str = "usage.json";
/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The largest state file read. Rows are bounded (users × providers × 65 model labels ×
/// accounts); 16 MiB is tens of thousands of them.
pub const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;
/// How long after a change the state is written at most.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The state file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The usage ledger, one record per (uid, provider, model, account).
    pub usage: Vec<UsageRecord>,
    /// Tokens spent per budgeted caller in its current (or last) window.
    pub budgets: Vec<BudgetRecord>,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The caller's uid (`null`: connections whose owner was not determined).
    pub uid: Option<u32>,
    /// The uid's user name when it had one (shown by `/usage`).
    pub user: Option<String>,
    /// The provider label (`openai`, `chatgpt`).
    pub provider: String,
    /// The model label (as in `/metrics`).
    pub model: String,
    /// The account's index.
    pub account: usize,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
}

/// One caller's budget window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRecord {
    /// The caller's uid (`null`: owner unknown, under `[users."*"]`).
    pub uid: Option<u32>,
    /// The window length the tokens were counted under (`"1h"`, `"1d"`, `"7d"`, `"30d"`).
    pub window: String,
    /// The window's start, in Unix seconds.
    pub window_start: u64,
    /// Input + output tokens counted in that window.
    pub tokens: u64,
}

/// Just the version, read first, so a file of another version is named as such.
#[derive(Deserialize)]
struct Versioned {
    version: Option<u32>,
}

/// The checked state directory and what it held at start.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    /// The directory, opened for reading (`openat`, `renameat`, `fsync`).
    dir: OwnedFd,
    /// What the state file held at start (empty when there was none).
    loaded: Snapshot,
}

// === impl StateDir ===

impl StateDir {
    /// Opens and checks `path` for a proxy running as `owner` (after any drop), and reads the
    /// state file. The message names the problem (it becomes exit code 2).
    pub fn open(path: &Path, owner: Uid) -> Result<StateDir, String> {
        let walked = super::info::open_dir_nofollow(path)?;
        let dir = openat(
            &walked,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("cannot open it: {e}"))?;
        let dir = std::fs::File::from(dir);
        let meta = dir
            .metadata()
            .map_err(|e| format!("cannot read it: {}", e.kind()))?;
        crate::pool::auth_dir::check_private(&meta, owner, "the directory")?;
        let dir = OwnedFd::from(dir);
        let loaded = read_state(&dir, owner)?;
        Ok(StateDir {
            path: path.to_path_buf(),
            dir,
            loaded,
        })
    }

    /// Where the state lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the state file held at start.
    pub fn loaded(&self) -> &Snapshot {
        &self.loaded
    }

    /// Writes `snapshot` atomically (see the module docs).
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), String> {
        let mut bytes = serde_json::to_vec_pretty(snapshot).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| e.to_string())?;
        let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let temp = OsString::from(format!(".{STATE_FILE}.{suffix}.tmp"));
        let fd = openat(
            &self.dir,
            temp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| format!("create a temp file: {e}"))?;
        let mut file = std::fs::File::from(fd);
        let result = (|| {
            file.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
            file.sync_all().map_err(|e| format!("sync: {e}"))?;
            renameat(&self.dir, temp.as_os_str(), &self.dir, STATE_FILE)
                .map_err(|e| format!("rename: {e}"))?;
            // The rename is durable only once the directory is.
            nix::unistd::fsync(self.dir.as_fd()).map_err(|e| format!("sync the directory: {e}"))
        })();
        if result.is_err() {
            let _ = unlinkat(&self.dir, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }
}

/// Reads the state file through `dir` (none: an empty snapshot, the first start).
fn read_state(dir: &OwnedFd, owner: Uid) -> Result<Snapshot, String> {
    let fd = match openat(
        dir,
        STATE_FILE,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => {
            return Ok(Snapshot {
                version: FORMAT_VERSION,
                ..Snapshot::default()
            })
        }
        Err(Errno::ELOOP) => {
            return Err(format!(
                "{STATE_FILE} is a symbolic link; the state file is never followed"
            ))
        }
        Err(e) => return Err(format!("cannot open {STATE_FILE}: {e}")),
    };
    let mut file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {STATE_FILE}: {}", e.kind()))?;
    if !meta.is_file() {
        return Err(format!("{STATE_FILE} is not a regular file"));
    }
    crate::pool::auth_dir::check_private(&meta, owner, STATE_FILE)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {STATE_FILE}: {}", e.kind()))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(format!(
            "{STATE_FILE} is larger than {MAX_STATE_BYTES} bytes; not a state file this proxy wrote"
        ));
    }
    parse(&bytes)
}

/// Parses and checks a state file's bytes. The message names what is wrong (with a line and
/// column for JSON errors) and never quotes the file.
pub fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let corrupt = |e: serde_json::Error| {
        format!(
            "{STATE_FILE} is corrupt (line {}, column {}: {}); it is never reset silently: \
             repair or remove it",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Io => "cannot be read",
                serde_json::error::Category::Syntax => "not valid JSON",
                serde_json::error::Category::Data => "not the state format",
                serde_json::error::Category::Eof => "ends early",
            }
        )
    };
    let versioned: Versioned = serde_json::from_slice(bytes).map_err(corrupt)?;
    match versioned.version {
        Some(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "{STATE_FILE} has format version {other}; this proxy reads version \
                 {FORMAT_VERSION}"
            ))
        }
        None => return Err(format!("{STATE_FILE} has no format version")),
    }
    let snapshot: Snapshot = serde_json::from_slice(bytes).map_err(corrupt)?;
    for record in &snapshot.usage {
        if super::usage::provider_label(&record.provider).is_none() {
            return Err(format!(
                "{STATE_FILE} counts usage for provider {:?}, which is not a provider name",
                super::usage::model_label(Some(&record.provider))
            ));
        }
    }
    for record in &snapshot.budgets {
        if super::policy::BudgetWindow::parse(&record.window).is_none() {
            return Err(format!(
                "{STATE_FILE} has a budget window that is not 1h, 1d, 7d or 30d"
            ));
        }
    }
    Ok(snapshot)
}

/// Everything to keep, now.
pub fn snapshot(accounting: &Accounting, policies: &Policies) -> Snapshot {
    Snapshot {
        version: FORMAT_VERSION,
        usage: accounting.records(),
        budgets: policies.budget_records(),
    }
}

/// Puts a loaded snapshot back into fresh counters.
pub fn restore(snapshot: &Snapshot, accounting: &Accounting, policies: &Policies) {
    accounting.restore(&snapshot.usage);
    policies.restore_budgets(&snapshot.budgets);
}

/// Writes the state at most [`SAVE_INTERVAL`] after it changed, until `stop`; then returns
/// (the caller writes the final state after the drain). A failed write is logged and tried
/// again at the next interval.
pub async fn run_saver(dir: Arc<StateDir>, state: Arc<super::State>, stop: CancellationToken) {
    let mut written = dir.loaded().clone();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAVE_INTERVAL) => {}
        }
        let now = snapshot(&state.accounting, &state.policies);
        if now == written {
            continue;
        }
        let writer = Arc::clone(&dir);
        let saved = tokio::task::spawn_blocking(move || writer.save(&now).map(|()| now)).await;
        match saved {
            Ok(Ok(now)) => {
                if failing {
                    tracing::info!(dir = %dir.path().display(), "state written again");
                }
                failing = false;
                written = now;
            }
            Ok(Err(error)) => {
                // Once per failing stretch, not once a second.
                if !failing {
                    tracing::warn!(dir = %dir.path().display(), %error, "cannot write the state; retrying");
                }
                failing = true;
            }
            Err(error) => tracing::warn!(%error, "state writer task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> PathBuf {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let dir = std::env::temp_dir().join(format!("cp-state-{}", u64::from_ne_bytes(random)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    fn me() -> Uid {
        nix::unistd::geteuid()
    }

    fn sample() -> Snapshot {
        Snapshot {
            version: FORMAT_VERSION,
            usage: vec![UsageRecord {
                uid: Some(1000),
                user: Some("alice".into()),
                provider: "openai".into(),
                model: "gpt-5".into(),
                account: 0,
                requests: 2,
                input_tokens: 20,
                cached_input_tokens: 8,
                output_tokens: 14,
                reasoning_tokens: 6,
            }],
            budgets: vec![BudgetRecord {
                uid: Some(1000),
                window: "1h".into(),
                window_start: 7_200,
                tokens: 34,
            }],
        }
    }

    #[test]
    fn a_saved_snapshot_reads_back_and_leaves_no_temp_file() {
        let dir = private_dir();
        let state = StateDir::open(&dir, me()).unwrap();
        assert_eq!(state.loaded().version, FORMAT_VERSION);
        assert!(state.loaded().usage.is_empty());
        state.save(&sample()).unwrap();
        state.save(&sample()).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from(STATE_FILE)]);
        let file = dir.join(STATE_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(StateDir::open(&dir, me()).unwrap().loaded(), &sample());
    }

    #[test]
    fn an_open_or_foreign_directory_is_refused() {
        let dir = private_dir();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = StateDir::open(&dir, me()).unwrap_err();
        assert!(err.contains("accessible by group or others"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let other = Uid::from_raw(me().as_raw() + 1);
        let err = StateDir::open(&dir, other).unwrap_err();
        assert!(err.contains("owned by uid"), "{err}");
    }

    #[test]
    fn a_symlinked_directory_or_state_file_is_refused() {
        let dir = private_dir();
        let real = dir.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&real, dir.join("link")).unwrap();
        let err = StateDir::open(&dir.join("link"), me()).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        std::fs::write(dir.join("elsewhere.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere.json"), real.join(STATE_FILE)).unwrap();
        let err = StateDir::open(&real, me()).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn corrupt_or_foreign_state_is_an_error_that_does_not_quote_the_file() {
        for (bytes, expect) in [
            (&b"{\"version\":1,\"usage\":[{\"uid\":1,"[..], "corrupt"),
            (b"not json sk-secret", "corrupt"),
            (b"{\"version\":2,\"usage\":[],\"budgets\":[]}", "version 2"),
            (b"{\"usage\":[],\"budgets\":[]}", "no format version"),
            (
                b"{\"version\":1,\"usage\":[],\"budgets\":[],\"extra\":1}",
                "corrupt",
            ),
            (
                b"{\"version\":1,\"usage\":[],\"budgets\":[{\"uid\":1,\"window\":\"2h\",\"window_start\":0,\"tokens\":1}]}",
                "budget window",
            ),
        ] {
            let err = parse(bytes).unwrap_err();
            assert!(err.contains(expect), "{err}");
            assert!(!err.contains("sk-secret"), "{err}");
        }
        let dir = private_dir();
        std::fs::write(dir.join(STATE_FILE), b"{\"version\":1,").unwrap();
        std::fs::set_permissions(dir.join(STATE_FILE), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let err = StateDir::open(&dir, me()).unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
        // Never reset: the file is still there, as it was.
        assert_eq!(
            std::fs::read(dir.join(STATE_FILE)).unwrap(),
            b"{\"version\":1,"
        );
    }

    #[test]
    fn usage_and_budgets_restored_into_fresh_counters_snapshot_the_same() {
        use super::super::peer::Caller;
        use super::super::policy::{Budget, BudgetWindow, PolicyTable, UserPolicy};
        let mut table = PolicyTable::default();
        table.insert(
            Some(1000),
            UserPolicy {
                budget: Some(Budget {
                    tokens: 30,
                    window: BudgetWindow::Hour,
                }),
                ..UserPolicy::default()
            },
        );
        let accounting = Accounting::new();
        let policies = Policies::new(table.clone());
        restore(&sample(), &accounting, &policies);
        assert_eq!(snapshot(&accounting, &policies), sample());
        // The budget spent before the restart still refuses in its window.
        let alice = Caller {
            uid: 1000,
            name: None,
        };
        assert!(policies.check_budget(Some(&alice), 7_200 + 10).is_err());
        assert!(policies.check_budget(Some(&alice), 10_800).is_ok());
        let text = accounting.exposition(&[], 0);
        assert!(text.contains(
            "codex_proxy_tokens_total{provider=\"openai\",model=\"gpt-5\",user=\"alice\",kind=\"input\"} 20"
        ), "{text}");
        // A budget whose window length changed is not restored.
        let mut daily = PolicyTable::default();
        daily.insert(
            Some(1000),
            UserPolicy {
                budget: Some(Budget {
                    tokens: 30,
                    window: BudgetWindow::Day,
                }),
                ..UserPolicy::default()
            },
        );
        let policies = Policies::new(daily);
        policies.restore_budgets(&sample().budgets);
        assert!(policies.budget_records().is_empty());
    }
}
