//! Generates the man page and shell completions of `codex-proxy` from its clap definition
//! (`codex_proxy::cli::Args`), so they always list exactly the flags `--help` shows.
//!
//! Usage: gen_assets DIR
//! Writes `DIR/man/codex-proxy.1` and `DIR/completions/{codex-proxy.bash,_codex-proxy,
//! codex-proxy.fish}` (bash, zsh, fish). `scripts/gen-assets` runs it; `packaging/` installs
//! the result.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use codex_proxy::cli::Args;

const USAGE: &str = "usage: gen_assets DIR (writes DIR/man/codex-proxy.1 and DIR/completions/*)";

fn generate(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = dir.join("man");
    std::fs::create_dir_all(&man_dir)?;
    let man_path = man_dir.join("codex-proxy.1");
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command()).render(&mut page)?;
    std::fs::write(&man_path, page)?;
    written.push(man_path);

    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut command = Args::command();
        let path = clap_complete::generate_to(shell, &mut command, "codex-proxy", &completions)?;
        written.push(path);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [dir] if !dir.starts_with('-') => PathBuf::from(dir),
        _ => {
            eprintln!("gen_assets: expected one directory\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match generate(&dir) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen_assets: cannot write into {}: {e}", dir.display());
            ExitCode::from(1)
        }
    }
}
