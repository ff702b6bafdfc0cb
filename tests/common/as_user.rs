//! Running a program as another local user (root only), for the tests that need the kernel to
//! see a second uid on the other end of a connection.

use std::process::Command;

/// `program` run as `uid` with no supplementary groups (`setpriv`), or as this test's own user
/// when `uid` is `None`.
pub fn command_as(uid: Option<u32>, program: &str) -> Command {
    match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".to_string(),
                program.to_string(),
            ]);
            c
        }
        None => Command::new(program),
    }
}
