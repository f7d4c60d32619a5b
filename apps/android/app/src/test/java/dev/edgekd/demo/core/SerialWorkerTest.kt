package dev.edgekd.demo.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import java.util.Collections
import java.util.concurrent.CancellationException
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit

/** The close in onDestroy against an inference in flight: the interpreter is released after it, never during it. */
class SerialWorkerTest {
    /** Stands in for the Interpreter: a run on a closed one is the use-after-free the real one would hit. */
    private class Resource {
        @Volatile var closed = false
        @Volatile var usedAfterClose = false
        fun run() { if (closed) usedAfterClose = true }
        fun close() { closed = true }
    }

    @Test
    fun closeWaitsForTheRunningTaskThenReleasesOnTheWorker() {
        val worker = SerialWorker()
        val resource = Resource()
        val started = CountDownLatch(1)
        val proceed = CountDownLatch(1)
        val events = Collections.synchronizedList(ArrayList<String>())
        var releaseThread: Thread? = null
        var taskThread: Thread? = null
        assertTrue(worker.submit {
            taskThread = Thread.currentThread()
            started.countDown()
            events.add("inference start")
            assertTrue(proceed.await(5, TimeUnit.SECONDS))
            resource.run() // the inference's last use of the interpreter
            events.add("inference end")
        })
        assertTrue(started.await(5, TimeUnit.SECONDS))
        worker.close { releaseThread = Thread.currentThread(); resource.close(); events.add("release") }
        // close returned at once (onDestroy does not block) and did not release under the running inference
        assertTrue(worker.isClosing)
        Thread.sleep(50)
        assertFalse(resource.closed)
        proceed.countDown()
        assertTrue(worker.awaitTermination(5_000))
        assertEquals(listOf("inference start", "inference end", "release"), events.toList())
        assertTrue(resource.closed)
        assertFalse(resource.usedAfterClose)
        assertEquals(taskThread, releaseThread)
    }

    @Test
    fun queuedTasksAreSkippedAndLaterOnesRefused() {
        val worker = SerialWorker()
        val proceed = CountDownLatch(1)
        val started = CountDownLatch(1)
        val ran = Collections.synchronizedList(ArrayList<String>())
        worker.submit { started.countDown(); proceed.await(5, TimeUnit.SECONDS); ran.add("running") }
        worker.submit { ran.add("queued") }
        assertTrue(started.await(5, TimeUnit.SECONDS))
        var releases = 0
        worker.close { releases++ }
        worker.close { releases++ } // a second close does nothing
        assertFalse(worker.submit { ran.add("after close") })
        proceed.countDown()
        assertTrue(worker.awaitTermination(5_000))
        assertEquals(listOf("running"), ran.toList())
        assertEquals(1, releases)
    }

    @Test
    fun ensureOpenStopsALongTaskAtItsNextSafePoint() {
        val worker = SerialWorker()
        worker.ensureOpen()
        worker.close {}
        var stopped = false
        try {
            worker.ensureOpen()
        } catch (e: CancellationException) {
            stopped = true
        }
        assertTrue(stopped)
        assertTrue(worker.awaitTermination(5_000))
    }
}
