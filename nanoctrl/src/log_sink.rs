//! A log writer that never blocks the thread that logs. tracing's default writer
//! writes to stderr synchronously, so a stderr nobody drains (a full pipe) would stall
//! every request that logs. Here each formatted line goes into a bounded queue; one
//! thread writes the queue to stderr; when the queue is full the line is dropped and
//! counted, and the writer says how many were lost once it catches up.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// Lines buffered before new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// The `MakeWriter` handed to tracing-subscriber.
#[derive(Clone)]
pub struct NonBlockingStderr {
    tx: SyncSender<Vec<u8>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    /// Lines queued and not yet written.
    pending: AtomicU64,
    /// Lines dropped since the writer last said so.
    dropped: AtomicU64,
}

/// Dropping it waits until the queued lines are written, for at most a short deadline
/// (a stderr that never drains must not hold up the exit).
pub struct Flusher {
    counts: Arc<Counts>,
    deadline: Duration,
}

pub fn stderr() -> (NonBlockingStderr, Flusher) {
    let (tx, rx) = sync_channel(QUEUE_LINES);
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    // Without the thread nothing is written, but nothing blocks either.
    let _ = std::thread::Builder::new()
        .name("nanoctrl-log".into())
        .spawn(move || drain(rx, c));
    (
        NonBlockingStderr {
            tx,
            counts: counts.clone(),
        },
        Flusher {
            counts,
            deadline: Duration::from_secs(2),
        },
    )
}

fn drain(rx: Receiver<Vec<u8>>, counts: Arc<Counts>) {
    let mut err = std::io::stderr().lock();
    while let Ok(line) = rx.recv() {
        let lost = counts.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                err,
                "nanoctrl: {lost} log lines dropped (stderr is not keeping up)"
            );
        }
        let _ = err.write_all(&line);
        let _ = err.flush();
        counts.pending.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let end = Instant::now() + self.deadline;
        while self.counts.pending.load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One event's bytes; queued when tracing drops the writer at the end of the event.
pub struct LineWriter {
    buf: Vec<u8>,
    sink: NonBlockingStderr,
}

impl Write for LineWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let counts = &self.sink.counts;
        counts.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.sink.tx.try_send(std::mem::take(&mut self.buf))
        {
            counts.pending.fetch_sub(1, Ordering::AcqRel);
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<'a> MakeWriter<'a> for NonBlockingStderr {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buf: Vec::with_capacity(256),
            sink: self.clone(),
        }
    }
}
