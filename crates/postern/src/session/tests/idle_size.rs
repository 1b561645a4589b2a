//! The task of an idle session must not be sized by its largest verb
//! (issue 20, W4/W4-TLS: 10,000 idle connections). Sizes of future types,
//! compared with each other rather than with fixed numbers, so that a
//! compiler version or the debug profile does not change the verdict.

use tokio::io::DuplexStream;

use crate::session::{run, Conn, Context, Session};

/// The size of the future `f` returns, without calling it.
fn future_size<A, B, C, F: std::future::Future>(_f: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn commands_are_not_inline_in_the_session_task() {
    let run_size = future_size(|io: DuplexStream, conn: Conn, ctx: Context| run(io, conn, ctx));
    let command_size = future_size(|s: &'static mut Session<DuplexStream>, line: &'static [u8], _: ()| s.command(line));
    let session_size = std::mem::size_of::<Session<DuplexStream>>();
    eprintln!("run future {run_size} B, session {session_size} B, command future {command_size} B");
    // Were a command awaited inline, the task would hold the session and
    // the command's future side by side.
    assert!(run_size < session_size + command_size, "run {run_size} B, session {session_size} B, command {command_size} B");
    // Nor does it hold the session twice (an `async fn run` holds its
    // arguments and the session built from them).
    assert!(run_size < 2 * session_size, "run {run_size} B, session {session_size} B");
}
