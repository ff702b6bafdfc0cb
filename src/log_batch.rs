//! Log lines to stderr, batched on the runtime's thread.
//!
//! Every request logs one line. Written at once, that line is a `write(2)` on the request's
//! path, made before hyper flushes the response it belongs to. On the thread that runs the
//! runtime, lines are instead appended to one buffer, which goes out in one `write(2)` when the
//! runtime has no more ready work and is about to wait for I/O ([`flush`] is its park hook):
//! after the responses of that turn were written, and as one write for all the lines of a
//! busy turn. The buffer is also written when it passes [`FLUSH_AT`] bytes, by any line
//! written from another thread (which goes straight out, after what is buffered, so lines
//! keep their order), and when the process ends ([`FlushOnDrop`] in `main`, unwinding
//! included). A request whose task panics has its line in the buffer already; a process killed
//! with SIGKILL loses at most the lines of the turn it was in.

use std::cell::Cell;
use std::io::Write;
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

/// Buffered bytes past which a line is not kept waiting for the park hook.
pub const FLUSH_AT: usize = 64 * 1024;

static PENDING: Mutex<Batch> = Mutex::new(Batch {
    pending: Vec::new(),
});

thread_local! {
    static BATCHED: Cell<bool> = const { Cell::new(false) };
}

/// Lines logged on this thread wait for [`flush`] from now on. Called on the runtime's
/// thread, which must call [`flush`] before it waits for I/O.
pub fn batch_this_thread() {
    BATCHED.with(|b| b.set(true));
}

/// Writes out what is buffered; lines logged on this thread go out at once again.
pub fn stop_batching_this_thread() {
    BATCHED.with(|b| b.set(false));
    flush();
}

/// Writes out the buffered lines.
pub fn flush() {
    lock().write_out(&mut std::io::stderr());
}

fn lock() -> std::sync::MutexGuard<'static, Batch> {
    // A panic while the lock was held left at worst a partial line: still worth writing.
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lines not yet written.
struct Batch {
    pending: Vec<u8>,
}

impl Batch {
    /// Takes one line; writes it (after what is pending) unless it may wait.
    fn push(&mut self, line: &[u8], may_wait: bool, out: &mut impl Write) {
        self.pending.extend_from_slice(line);
        if !may_wait || self.pending.len() >= FLUSH_AT {
            self.write_out(out);
        }
    }

    fn write_out(&mut self, out: &mut impl Write) {
        if self.pending.is_empty() {
            return;
        }
        // Nothing else can be done with a log line that stderr refuses.
        let _ = out.write_all(&self.pending);
        self.pending.clear();
        // A burst of long lines does not keep its memory for the life of the process.
        if self.pending.capacity() > 4 * FLUSH_AT {
            self.pending.shrink_to(FLUSH_AT);
        }
    }
}

/// Flushes the buffer when dropped: at the end of `main`, and when a panic unwinds it.
pub struct FlushOnDrop;

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush();
    }
}

/// The `tracing` writer: buffered on a batching thread, straight to stderr elsewhere.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let may_wait = BATCHED.with(Cell::get);
        lock().push(buf, may_wait, &mut std::io::stderr());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_wait_when_they_may_and_keep_their_order_with_lines_that_may_not() {
        let mut batch = Batch {
            pending: Vec::new(),
        };
        let mut out = Vec::new();
        batch.push(b"one\n", true, &mut out);
        batch.push(b"two\n", true, &mut out);
        assert_eq!(out, b"", "kept until the park hook");
        // A line from a thread that does not batch goes out at once, after them.
        batch.push(b"three\n", false, &mut out);
        assert_eq!(out, b"one\ntwo\nthree\n");
        batch.push(b"four\n", true, &mut out);
        batch.write_out(&mut out);
        assert_eq!(out, b"one\ntwo\nthree\nfour\n");
        assert!(batch.pending.is_empty());
    }

    #[test]
    fn a_burst_past_the_threshold_does_not_wait_for_the_park_hook() {
        let mut batch = Batch {
            pending: Vec::new(),
        };
        let mut out = Vec::new();
        let line = vec![b'x'; 1024];
        for _ in 0..FLUSH_AT / line.len() - 1 {
            batch.push(&line, true, &mut out);
        }
        assert!(out.is_empty());
        batch.push(&line, true, &mut out);
        assert_eq!(
            out.len(),
            FLUSH_AT,
            "written once FLUSH_AT bytes were pending"
        );
        assert!(batch.pending.is_empty());
    }

    #[test]
    fn only_the_thread_that_asked_batches() {
        std::thread::spawn(|| {
            assert!(!BATCHED.with(Cell::get));
            batch_this_thread();
            assert!(BATCHED.with(Cell::get));
            std::thread::spawn(|| assert!(!BATCHED.with(Cell::get)))
                .join()
                .unwrap();
        })
        .join()
        .unwrap();
    }
}
