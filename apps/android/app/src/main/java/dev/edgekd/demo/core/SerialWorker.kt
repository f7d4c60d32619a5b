package dev.edgekd.demo.core

import java.util.concurrent.CancellationException
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.RejectedExecutionException
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicBoolean

/**
 * The one background thread all model work runs on, with a [close] that cannot race it. The LiteRT Interpreter
 * must not be closed while a run on it is in flight (its native buffers are freed under the running kernels), and
 * an inference cannot be interrupted, so closing from the UI thread in `onDestroy` is unsafe. Here the release is
 * itself a task on the same thread: it runs after the task in flight has returned, never during it, and
 * `onDestroy` does not block waiting for it.
 */
class SerialWorker(private val executor: ExecutorService = Executors.newSingleThreadExecutor()) {
    private val closing = AtomicBoolean(false)

    /** True once [close] was called: long tasks (the benchmark) check it between runs through [ensureOpen]. */
    val isClosing: Boolean get() = closing.get()

    /**
     * Runs [task] on the worker after everything submitted before it. Returns false, running nothing, once [close]
     * was called; a task queued before [close] but not yet started is skipped (its activity is gone).
     */
    fun submit(task: () -> Unit): Boolean {
        if (closing.get()) return false
        return try {
            executor.execute { if (!closing.get()) task() }
            true
        } catch (e: RejectedExecutionException) {
            false
        }
    }

    /** Throws [CancellationException] once [close] was called: lets a long task stop at a safe point. */
    fun ensureOpen() {
        if (closing.get()) throw CancellationException("closing")
    }

    /**
     * Takes no more work and runs [release] on the worker thread once the task in flight (if any) has returned,
     * then lets the thread end. Returns at once; only the first call does anything.
     */
    fun close(release: () -> Unit) {
        if (!closing.compareAndSet(false, true)) return
        executor.execute(release)
        executor.shutdown()
    }

    /** For tests: wait until [close]'s release has run and the thread has ended. */
    fun awaitTermination(timeoutMs: Long): Boolean = executor.awaitTermination(timeoutMs, TimeUnit.MILLISECONDS)
}
