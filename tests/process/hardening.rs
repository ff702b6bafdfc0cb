//! Hardening of the running process, seen from outside (root only; skipped otherwise).
//!
//! Every "blocked" probe runs as uid `nobody` (65534) and is paired with the same probe
//! against a control process of that uid, which must succeed — so a broken harness cannot
//! pass silently.

use std::process::Command;

use crate::spawn::{canary, is_root, start, temp_dir, Launch, Running};

const NOBODY: u32 = 65534;

/// Runs `script` with sh as uid/gid nobody; returns (success, stdout+stderr).
fn as_nobody(script: &str) -> (bool, String) {
    let out = Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".to_string(),
            "/bin/sh".to_string(),
            "-c".to_string(),
            script.to_string(),
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Reads one page of the first mapping of `pid` through /proc/PID/mem, as nobody.
/// Prints READ-OK only when a whole page was read.
fn read_mem_as_nobody(pid: u32) -> (bool, String) {
    as_nobody(&format!(
        "addr=$(head -n1 /proc/{pid}/maps | cut -d- -f1) || exit 1; [ -n \"$addr\" ] || exit 1; \
         n=$(dd if=/proc/{pid}/mem bs=4096 count=1 iflag=skip_bytes skip=$((0x$addr)) status=none | wc -c); \
         [ \"$n\" = 4096 ] && echo READ-OK"
    ))
}

/// Prints READ-OK only when the environment could be read.
fn read_environ_as_nobody(pid: u32) -> (bool, String) {
    as_nobody(&format!(
        "cat /proc/{pid}/environ > /dev/null && echo READ-OK"
    ))
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing"))
        .trim()
        .to_string()
}

fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    line.split_whitespace()
        .skip(4)
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A control process running as nobody, readable by another nobody process.
struct Control(std::process::Child);

impl Control {
    fn start() -> Control {
        let child = Command::new("setpriv")
            .args([
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
                "--clear-groups".into(),
                "sleep".into(),
                "60".into(),
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        Control(child)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn assert_hardened(proxy: &Running) {
    let pid = proxy.pid;
    let control = Control::start();
    let (ok, text) = read_mem_as_nobody(control.0.id());
    assert!(
        ok && text.contains("READ-OK"),
        "control: /proc/PID/mem of a same-uid process is readable: {text}"
    );
    let (ok, text) = read_environ_as_nobody(control.0.id());
    assert!(
        ok && text.contains("READ-OK"),
        "control: environ of a same-uid process is readable: {text}"
    );

    let (ok, text) = read_mem_as_nobody(pid);
    assert!(
        !ok && !text.contains("READ-OK"),
        "/proc/PID/mem of the proxy must not be readable: {text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    let (ok, text) = read_environ_as_nobody(pid);
    assert!(
        !ok && !text.contains("READ-OK") && text.contains("Permission denied"),
        "environ must not be readable: {text}"
    );

    let locked_kb: u64 = status_field(pid, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        locked_kb > 0,
        "secret memory is locked (VmLck {locked_kb} kB)"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(core_limit(pid), "0 0");
}

#[test]
fn started_directly_as_nobody_the_process_is_non_dumpable_locked_and_coreless() {
    if !is_root() {
        eprintln!("skipped: needs root to run processes as nobody");
        return;
    }
    let dir = temp_dir("as-nobody");
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let key = canary();
    let proxy = start(
        Launch {
            args: vec![],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: Some(NOBODY),
            env: vec![],
        },
        &dir,
    );
    assert_eq!(
        status_field(proxy.pid, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["65534"; 4]
    );
    assert_hardened(&proxy);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{logs}");
}

#[test]
fn started_as_root_with_user_nobody_it_drops_everything_and_stays_non_dumpable() {
    if !is_root() {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    let dir = temp_dir("user-drop");
    let key = canary();
    let proxy = start(
        Launch {
            args: vec!["--user".into(), "nobody".into()],
            stdin: format!("{key}\n").as_bytes(),
            as_uid: None,
            env: vec![],
        },
        &dir,
    );
    // The server-info file was written before the drop, as root, in root's directory.
    let meta = std::fs::metadata(&proxy.info_path).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), 0);
    assert_eq!(
        status_field(proxy.pid, "Uid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["65534"; 4]
    );
    assert_eq!(
        status_field(proxy.pid, "Gid")
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["65534"; 4]
    );
    assert_eq!(status_field(proxy.pid, "Groups"), "");
    assert_eq!(status_field(proxy.pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(proxy.pid, "CapPrm"), "0000000000000000");
    assert_hardened(&proxy);
    let (status, logs) = proxy.terminate();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("dropped privileges"), "{logs}");
}

#[test]
fn without_lockable_memory_the_proxy_refuses_to_start_with_exit_5() {
    if !is_root() {
        eprintln!("skipped: needs root to start the proxy as nobody with RLIMIT_MEMLOCK 0");
        return;
    }
    let run = |memlock: &str| {
        Command::new("prlimit")
            .args([
                format!("--memlock={memlock}"),
                "setpriv".into(),
                format!("--reuid={NOBODY}"),
                format!("--regid={NOBODY}"),
            ])
            .args(["--clear-groups", crate::spawn::BIN])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("0:0");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("lock"), "{stderr}");
    // Control: with the default limit the same launch gets past locking (and stops at the
    // empty stdin, exit 3).
    let out = run("8388608:8388608");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
