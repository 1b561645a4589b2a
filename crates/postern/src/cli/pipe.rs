//! A closed standard output (`postern queue list | head -1`, `mailq | head`)
//! ends a command-line face quietly with status 141 (128 + SIGPIPE), as a C
//! tool killed by SIGPIPE would: no "panicked" text. Rust ignores SIGPIPE, so
//! `println!` panics on EPIPE; the hook installed here turns exactly that
//! panic into a quiet exit and leaves every other panic to the default hook.
//! The daemon (`serve`) writes nothing to standard output and is not affected.
//!
//! May touch: the process's panic hook, its exit status.

/// Exit status for a closed standard output: 128 + SIGPIPE (13).
pub const BROKEN_PIPE: i32 = 141;

/// Whether a panic message is `println!`'s failure on a closed pipe.
pub fn is_stdout_broken_pipe(msg: &str) -> bool {
    msg.starts_with("failed printing to stdout") && (msg.contains("Broken pipe") || msg.contains("os error 32"))
}

/// Installs the hook; call once, before the face runs.
pub fn exit_quietly_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(is_stdout_broken_pipe) {
            std::process::exit(BROKEN_PIPE);
        }
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_stdout_epipe() {
        for (msg, want) in [
            ("failed printing to stdout: Broken pipe (os error 32)", true),
            ("failed printing to stderr: Broken pipe (os error 32)", false),
            ("failed printing to stdout: No space left on device (os error 28)", false),
            ("called `Option::unwrap()` on a `None` value", false),
        ] {
            assert_eq!(is_stdout_broken_pipe(msg), want, "{msg}");
        }
    }
}
