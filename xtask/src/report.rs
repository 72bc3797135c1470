//! How a command ends: an expected failure prints its message and causes, not a stack trace.

use std::process::ExitCode;

/// Prints `result`'s error (message, then each cause) and returns the exit code. The backtrace
/// only with `verbose` (and only when RUST_BACKTRACE or RUST_LIB_BACKTRACE let anyhow capture
/// one); panics, which are bugs, keep Rust's own report.
pub fn exit(result: anyhow::Result<()>, verbose: bool) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("{}", render(&error));
    if verbose {
        match error.backtrace().status() {
            std::backtrace::BacktraceStatus::Captured => {
                eprintln!("\nbacktrace:\n{}", error.backtrace());
            }
            _ => eprintln!("\n(no backtrace captured: run with RUST_BACKTRACE=1 and -v)"),
        }
    }
    ExitCode::FAILURE
}

/// `error: <message>` and a `caused by:` line per cause.
pub fn render(error: &anyhow::Error) -> String {
    let mut text = format!("error: {error}");
    for cause in error.chain().skip(1) {
        text.push_str(&format!("\n  caused by: {cause}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    #[test]
    fn causes_follow_the_message_without_a_backtrace() {
        let error = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing the kubeconfig")
            .expect_err("an error");
        assert_eq!(
            super::render(&error),
            "error: writing the kubeconfig\n  caused by: disk full"
        );
    }
}
