//! Spawning the real binary and reading what it says.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_codex-proxy");

/// A fresh canary key for one test: 40 base62 characters after an obvious test prefix.
pub fn canary() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 40];
    getrandom::fill(&mut raw).unwrap();
    let tail: String = raw
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("sk-test-canary-{tail}")
}

/// A new empty directory under the system temp dir, world-traversable (for uid-drop tests).
pub fn temp_dir(tag: &str) -> PathBuf {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).unwrap();
    let dir = std::env::temp_dir().join(format!("cp-{tag}-{:016x}", u64::from_ne_bytes(raw)));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// How to start the binary.
pub struct Launch<'a> {
    pub args: Vec<String>,
    pub stdin: &'a [u8],
    /// Run the binary itself as this uid/gid (via setpriv), instead of as the test's user.
    pub as_uid: Option<u32>,
    /// Extra environment variables for the binary (a careless launcher's, in tests).
    pub env: Vec<(&'static str, String)>,
}

impl<'a> Launch<'a> {
    /// The binary with no flags, these credential bytes on stdin, as the test's user.
    pub fn with_stdin(stdin: &'a [u8]) -> Self {
        Launch {
            args: vec![],
            stdin,
            as_uid: None,
            env: vec![],
        }
    }
}

/// A running proxy.
pub struct Running {
    pub child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    pub info_path: PathBuf,
    pub info_text: String,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn command(launch: &Launch<'_>) -> Command {
    let mut cmd = crate::as_user::command_as(launch.as_uid, BIN);
    cmd.args(&launch.args);
    cmd.envs(launch.env.iter().map(|(k, v)| (*k, v.as_str())));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to completion; returns its status and stderr.
pub fn run_to_exit(launch: Launch<'_>) -> (ExitStatus, String) {
    let mut child = command(&launch).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(launch.stdin);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("codex-proxy did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the binary with `--server-info` in `dir` (added here) and waits for the file.
pub fn start(mut launch: Launch<'_>, dir: &Path) -> Running {
    let info_path = dir.join("server-info.json");
    launch.args.push("--server-info".into());
    launch.args.push(info_path.display().to_string());
    let mut child = command(&launch).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(launch.stdin).unwrap();
    drop(stdin);
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let info_text = loop {
        if let Ok(text) = std::fs::read_to_string(&info_path) {
            if text.ends_with('\n') {
                break text;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "codex-proxy exited early ({status}): {}",
                String::from_utf8_lossy(&stderr.lock().unwrap())
            );
        }
        assert!(Instant::now() < deadline, "no server-info file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let info: serde_json::Value = serde_json::from_str(&info_text).unwrap();
    let port = info["port"].as_u64().unwrap() as u16;
    let pid = info["pid"].as_u64().unwrap() as u32;
    assert_eq!(pid, child.id(), "server-info pid is the proxy's pid");
    Running {
        child,
        pid,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        info_path,
        info_text,
        stderr,
    }
}

impl Running {
    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Give the stderr reader a moment to drain.
                std::thread::sleep(Duration::from_millis(50));
                return (status, self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("codex-proxy did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when the test runs as root (cross-uid and memory-scan tests need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What `codex-proxy --help` prints (it must exit 0).
pub fn help_text() -> String {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "--help exits 0");
    String::from_utf8(out.stdout).unwrap()
}
